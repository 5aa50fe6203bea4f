// [checkpoint] error paths: every failure is a CheckpointError (or ConfigError for config.json)
// whose one-line message names the file and the offending tensor, opcode or global.
#include <catch2/catch.hpp>

#include "models/checkpoint.h"
#include "models/checkpoint_validator.h"
#include "models/model_loader.h"
#include "models/variant_inference.h"
#include "tests/checkpoint_test_util.h"

using namespace mlra;
using namespace mlra::test;
using Catch::Matchers::Contains;

namespace {

ModelConfig tiny_config(const std::string& variant) {
  return load_model_config(loader_data("tiny_mlra4_bin/config.json"), *parse_variant(variant));
}

// A safetensors checkpoint of `specs` in a scratch dir.
std::shared_ptr<Checkpoint> st_checkpoint(const ScratchDir& dir,
                                          const std::vector<TensorSpec>& specs) {
  write_safetensors(dir / "model.safetensors", specs);
  return Checkpoint::open(dir.path());
}

void copy_fixture(const std::string& rel, const ScratchDir& dir) {
  std::filesystem::copy(loader_data(rel), dir.path(), std::filesystem::copy_options::recursive);
}

}  // namespace

TEST_CASE("folder without weights, missing shard, missing folder", "[checkpoint]") {
  ScratchDir empty("empty");
  CHECK_THROWS_WITH(Checkpoint::open(empty.path()), Contains("no weights found"));
  CHECK_THROWS_WITH(Checkpoint::open(empty / "nope"), Contains("not a directory"));
  ScratchDir d("shard");
  copy_fixture("tiny_mlra4_bin", d);
  std::filesystem::remove(d / "pytorch_model-00002-of-00002.bin");
  CHECK_THROWS_WITH(Checkpoint::open(d.path()),
                    Contains("pytorch_model-00002-of-00002.bin") && Contains("missing shard"));
}

TEST_CASE("index naming a tensor its shard lacks, and path escapes", "[checkpoint]") {
  ScratchDir d("index");
  copy_fixture("tiny_mlra4_bin", d);
  auto j = nlohmann::json::parse(std::ifstream(d / "pytorch_model.bin.index.json"));
  j["weight_map"]["transformer.h.9.attn.ghost"] = "pytorch_model-00001-of-00002.bin";
  std::ofstream(d / "pytorch_model.bin.index.json") << j.dump();
  CHECK_THROWS_WITH(Checkpoint::open(d.path()), Contains("transformer.h.9.attn.ghost"));
  j["weight_map"]["transformer.h.9.attn.ghost"] = "../../etc/passwd";
  std::ofstream(d / "pytorch_model.bin.index.json") << j.dump();
  CHECK_THROWS_WITH(Checkpoint::open(d.path()), Contains("bad shard file name"));
}

TEST_CASE("truncated files and garbage are rejected", "[checkpoint]") {
  ScratchDir d("trunc");
  const auto bin = read_bytes(loader_data("features/pytorch_model.bin"));
  for (size_t keep : {size_t{0}, size_t{10}, bin.size() / 2, bin.size() - 1}) {
    INFO("kept " << keep << " bytes");
    write_bytes(d / "pytorch_model.bin", std::vector<char>(bin.begin(), bin.begin() + keep));
    CHECK_THROWS_AS(Checkpoint::open(d.path()), CheckpointError);
  }
  write_bytes(d / "pytorch_model.bin", std::vector<char>(4096, 'x'));
  CHECK_THROWS_WITH(Checkpoint::open(d.path()),
                    Contains("pytorch_model.bin") && Contains("not a valid zip"));
  std::filesystem::remove(d / "pytorch_model.bin");
  const auto st = read_bytes(loader_data("features_st/model.safetensors"));
  write_bytes(d / "model.safetensors", std::vector<char>(st.begin(), st.end() - 3));
  CHECK_THROWS_WITH(Checkpoint::open(d.path()), Contains("outside the"));
  write_bytes(d / "model.safetensors", std::vector<char>(st.begin(), st.begin() + 5));
  CHECK_THROWS_WITH(Checkpoint::open(d.path()), Contains("truncated safetensors"));
}

TEST_CASE("compressed zip entry is refused", "[checkpoint]") {
  CHECK_THROWS_WITH(Checkpoint::open(loader_data("errors/compressed_entry")),
                    Contains("archive/data/0") && Contains("compressed"));
  // The identical stored file loads: the failure is the compression, nothing else.
  auto ok = Checkpoint::open(loader_data("errors/handwritten_ok"));
  CHECK(ok->read_f32("w") == std::vector<float>{1, 2, 3, 4});
}

TEST_CASE("hostile pickles never execute and name what they tried", "[checkpoint]") {
  CHECK_THROWS_WITH(Checkpoint::open(loader_data("errors/global_os_system")),
                    Contains("disallowed global 'os.system'"));
  CHECK_THROWS_WITH(Checkpoint::open(loader_data("errors/global_eval_in_dict")),
                    Contains("disallowed global 'builtins.eval'"));
  CHECK_THROWS_WITH(Checkpoint::open(loader_data("errors/unknown_opcode")),
                    Contains("unsupported pickle opcode 0x69"));
  CHECK_THROWS_WITH(Checkpoint::open(loader_data("errors/deep_nesting")),
                    Contains("nesting deeper"));
  CHECK_THROWS_WITH(Checkpoint::open(loader_data("errors/deep_marks")), Contains("MARK nesting"));
  CHECK_THROWS_WITH(Checkpoint::open(loader_data("errors/double_storage")),
                    Contains("torch.DoubleStorage"));
}

TEST_CASE("tensors outside their storage are refused", "[checkpoint]") {
  CHECK_THROWS_WITH(Checkpoint::open(loader_data("errors/tensor_out_of_storage")),
                    Contains("reaches element 4") && Contains("holding only 4"));
  CHECK_THROWS_WITH(Checkpoint::open(loader_data("errors/storage_exceeds_bytes")),
                    Contains("tensor 'w'") && Contains("declares 100 elements"));
  ScratchDir d("st_oob");
  nlohmann::json h = {{"w", {{"dtype", "F32"}, {"shape", {2, 2}}, {"data_offsets", {0, 20}}}}};
  std::string hs = h.dump();
  std::vector<char> b(8 + hs.size() + 16, 1);
  const uint64_t len = hs.size();
  std::memcpy(b.data(), &len, 8);
  std::memcpy(b.data() + 8, hs.data(), hs.size());
  write_bytes(d / "model.safetensors", b);
  CHECK_THROWS_WITH(Checkpoint::open(d.path()), Contains("tensor 'w'") && Contains("outside"));
  h["w"]["data_offsets"] = {0, 12};
  hs = h.dump();
  b.assign(8 + hs.size() + 16, 1);
  const uint64_t len2 = hs.size();
  std::memcpy(b.data(), &len2, 8);
  std::memcpy(b.data() + 8, hs.data(), hs.size());
  write_bytes(d / "model.safetensors", b);
  CHECK_THROWS_WITH(Checkpoint::open(d.path()), Contains("12 bytes for 4 elements"));
}

TEST_CASE("slices outside a tensor are refused", "[checkpoint]") {
  auto ck = Checkpoint::open(loader_data("features"));
  CHECK_THROWS_WITH(ck->read_f32("plain.f32", {{0, 4}, {0, 5}}), Contains("out of dim 0"));
  CHECK_THROWS_WITH(ck->read_f32("plain.f32", {{0, 3}}), Contains("1 ranges for a rank-2"));
  CHECK_THROWS_WITH(ck->read_f32("plain.f32", {{2, 1}, {0, 5}}), Contains("range [2, 1)"));
  CHECK_THROWS_WITH(ck->info("nope"), Contains("no tensor 'nope'"));
}

TEST_CASE("missing, extra and mis-shaped tensors name file and tensor", "[checkpoint]") {
  const ModelConfig cfg = tiny_config("mlra4");
  auto specs = expected_tensors(cfg);
  {
    ScratchDir d("ok");
    CHECK_NOTHROW(validate_checkpoint(*st_checkpoint(d, specs), cfg));
  }
  {
    ScratchDir d("missing");
    auto s = specs;
    s.erase(s.begin() + 3);
    CHECK_THROWS_WITH(validate_checkpoint(*st_checkpoint(d, s), cfg),
                      Contains("missing tensor " + specs[3].name));
  }
  {
    ScratchDir d("extra");
    auto s = specs;
    s.push_back({"transformer.h.0.attn.rogue.weight", {3}});
    CHECK_THROWS_WITH(
        validate_checkpoint(*st_checkpoint(d, s), cfg),
        Contains("model.safetensors: unexpected tensor 'transformer.h.0.attn.rogue.weight'"));
  }
  {
    ScratchDir d("shape");
    auto s = specs;
    s[5].shape.back() += 1;
    CHECK_THROWS_WITH(validate_checkpoint(*st_checkpoint(d, s), cfg),
                      Contains("model.safetensors: tensor '" + s[5].name + "' has shape"));
  }
  {
    ScratchDir d("tied");  // lm_head may be absent (tied), but not the embedding
    auto s = specs;
    s.erase(s.begin());
    s.pop_back();
    CHECK_THROWS_WITH(validate_checkpoint(*st_checkpoint(d, s), cfg),
                      Contains("missing tensor transformer.wte.weight"));
  }
}

TEST_CASE("variant mismatch says what the checkpoint holds", "[checkpoint]") {
  CHECK_THROWS_WITH(
      load_model(loader_data("tiny_mlra4_bin"), *parse_variant("mlra2")),
      Contains("checkpoint holds mlra4") && Contains("configured attention is mlra2"));
  CHECK_THROWS_WITH(load_model(loader_data("tiny_mlra4_bin"), *parse_variant("mlra4_gated")),
                    Contains("checkpoint holds mlra4 ") && Contains("mlra4_gated"));
  CHECK_THROWS_WITH(load_model(loader_data("tiny_mlra4_bin"), *parse_variant("mla")),
                    Contains("checkpoint holds mlra4"));
  ScratchDir d("noconfig");
  copy_fixture("tiny_mlra4_st", d);
  std::filesystem::remove(d / "config.json");
  CHECK_THROWS_AS(load_model(d.path(), *parse_variant("mlra4")), ConfigError);
}
