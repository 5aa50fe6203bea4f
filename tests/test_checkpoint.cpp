// [checkpoint] reading: torch 1.13 .bin, torch 2.x layout (archive/ prefix, aligned entries),
// Zip64, safetensors (single and sharded), fp32/bf16/fp16, tied and offset storages, strided
// views, slices; checked against values torch itself wrote (features_reference.json) and across
// formats. load_model end to end on a tiny sharded MLRA-4 in both formats.
#include <catch2/catch.hpp>

#include <random>

#include "models/checkpoint.h"
#include "models/model_loader.h"
#include "models/variant_inference.h"
#include "tests/checkpoint_test_util.h"

using namespace mlra;
using namespace mlra::test;

namespace {

struct RefTensor {
  std::vector<int64_t> shape;
  std::vector<float> values;
};

std::map<std::string, RefTensor> load_reference() {
  std::ifstream in(loader_data("features_reference.json"));
  const auto j = nlohmann::json::parse(in);
  std::map<std::string, RefTensor> out;
  for (const auto& [name, e] : j.items()) {
    RefTensor r;
    r.shape = e["shape"].get<std::vector<int64_t>>();
    for (const auto& v : e["values"]) r.values.push_back(static_cast<float>(v.get<double>()));
    out[name] = r;
  }
  return out;
}

// Random hyper-rectangle of `shape` (possibly empty along a dim).
std::vector<Range> random_ranges(const std::vector<int64_t>& shape, std::mt19937& rng) {
  std::vector<Range> r;
  for (int64_t d : shape) {
    std::uniform_int_distribution<int64_t> pick(0, d);
    int64_t a = pick(rng), b = pick(rng);
    r.push_back({std::min(a, b), std::max(a, b)});
  }
  return r;
}

void check_against_reference(const Checkpoint& ck, bool has_tied_b) {
  const auto ref = load_reference();
  std::mt19937 rng(42);
  for (const auto& [name, r] : ref) {
    if (!has_tied_b && name == "tied.b") continue;
    INFO(ck.dir().string() << " tensor " << name);
    REQUIRE(ck.has(name));
    CHECK(ck.info(name).shape == r.shape);
    CHECK(ck.read_f32(name) == r.values);
    for (int k = 0; k < 20; ++k) {
      const auto ranges = random_ranges(r.shape, rng);
      CHECK(ck.read_f32(name, ranges) == slice_reference(r.values, r.shape, ranges));
    }
  }
}

}  // namespace

TEST_CASE("torch.save .bin (torch 1.13 layout) matches torch's own values", "[checkpoint]") {
  auto ck = Checkpoint::open(loader_data("features"));
  CHECK(ck->format() == "pytorch-bin");
  CHECK(ck->files() == std::vector<std::string>{"pytorch_model.bin"});
  check_against_reference(*ck, true);
  CHECK(ck->info("bf16").dtype == DType::kBF16);
  CHECK(ck->info("fp16").dtype == DType::kF16);
  CHECK(ck->info("plain.f32").dtype == DType::kF32);
  // Non-contiguous views keep their strides and point into the shared storage.
  CHECK(ck->info("transposed").strides == std::vector<int64_t>{1, 7});
  CHECK(ck->info("sliced.step").strides == std::vector<int64_t>{16, 3});
  CHECK(ck->info("tied.a").storage_id == ck->info("tied.b").storage_id);
  CHECK(ck->info("tied.a").data == ck->info("tied.b").data);
  CHECK(ck->info("view.a").storage_id == ck->info("view.b").storage_id);
  CHECK(ck->info("view.b").data - ck->info("view.a").data == 6 * 4);  // storage offset 6 floats
  CHECK(ck->info("plain.f32").storage_id != ck->info("tied.a").storage_id);
}

TEST_CASE("torch 2.x archive layout with aligned entries, and Zip64 records", "[checkpoint]") {
  for (const char* dir : {"features_archive", "features_zip64"}) {
    auto ck = Checkpoint::open(loader_data(dir));
    check_against_reference(*ck, true);
  }
  auto aligned = Checkpoint::open(loader_data("features_archive"));
  for (const auto& n : aligned->names())
    if (aligned->info(n).numel() > 0 && n != "view.b" && n != "sliced.step")
      CHECK(reinterpret_cast<uintptr_t>(aligned->info(n).data) % 64 == 0);
}

TEST_CASE("single safetensors file matches the same reference", "[checkpoint]") {
  auto ck = Checkpoint::open(loader_data("features_st"));
  CHECK(ck->format() == "safetensors");
  check_against_reference(*ck, false);
}

TEST_CASE("sharded .bin and sharded safetensors of one model read identically", "[checkpoint]") {
  auto bin = Checkpoint::open(loader_data("tiny_mlra4_bin"));
  auto st = Checkpoint::open(loader_data("tiny_mlra4_st"));
  CHECK(bin->files().size() == 2);
  CHECK(st->files().size() == 2);
  CHECK(bin->info("transformer.wte.weight").file == "pytorch_model-00001-of-00002.bin");
  CHECK(bin->info("layernorm.weight").file == "pytorch_model-00002-of-00002.bin");
  // Tied: pickled once, so both keys share one storage in the .bin.
  CHECK(bin->info("lm_head.weight").storage_id == bin->info("transformer.wte.weight").storage_id);
  CHECK_FALSE(st->has("lm_head.weight"));
  std::mt19937 rng(3);
  for (const auto& name : st->names()) {
    INFO(name);
    REQUIRE(bin->has(name));
    CHECK(bin->info(name).shape == st->info(name).shape);
    CHECK(bin->read_f32(name) == st->read_f32(name));
    const auto ranges = random_ranges(st->info(name).shape, rng);
    CHECK(bin->read_f32(name, ranges) == st->read_f32(name, ranges));
  }
  CHECK(bin->names().size() == st->names().size() + 1);
}

TEST_CASE("load_model validates the tiny MLRA-4 and infers its variant", "[checkpoint]") {
  for (const char* dir : {"tiny_mlra4_bin", "tiny_mlra4_st"}) {
    INFO(dir);
    const auto m = load_model(loader_data(dir), *parse_variant("mlra4"));
    CHECK(m.config.n_head == 4);
    CHECK(m.checkpoint->info("transformer.h.1.attn.kv_b_proj").shape ==
          std::vector<int64_t>{4, 8, 64});
    const auto inferred = infer_variant(*m.checkpoint);
    CHECK(inferred.variant == *parse_variant("mlra4"));
    CHECK(inferred.evidence.find("[4,8,64]") != std::string::npos);
  }
}

TEST_CASE("progress callback reports bytes and tensors per shard", "[checkpoint]") {
  std::vector<std::tuple<uint64_t, uint64_t, size_t>> calls;
  auto ck = Checkpoint::open(loader_data("tiny_mlra4_bin"), [&](uint64_t d, uint64_t t, size_t n) {
    calls.emplace_back(d, t, n);
  });
  REQUIRE(calls.size() == 2);
  CHECK(std::get<0>(calls.back()) == std::get<1>(calls.back()));
  CHECK(std::get<0>(calls.back()) == ck->total_bytes());
  CHECK(std::get<2>(calls.front()) < std::get<2>(calls.back()));
  CHECK(std::get<2>(calls.back()) == ck->names().size());
}
