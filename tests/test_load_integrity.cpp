// [integrity] what the serving path refuses at load: a config.json that disagrees with the
// tensors (one line naming the tensor and both shapes), a shard whose zip CRC-32 does not match
// its bytes, weights that are not finite, and shards that are not regular files (a FIFO must not
// hang the loader). The runners (in-process and TP workers) are exercised, not only the loader.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <numeric>
#include <random>

#include <spdlog/spdlog.h>
#include <zlib.h>

#include "engine/local_runner.h"
#include "engine/runner_factory.h"
#include "models/checkpoint_integrity.h"
#include "models/model_loader.h"
#include "models/torch_bin_file.h"
#include "tests/checkpoint_test_util.h"

using namespace mlra;
using namespace mlra::test;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

const fs::path kDefaultModel = fs::path(MLRA_SOURCE_DIR) / "models" / "default";

// The default model's shards linked into a scratch folder beside an edited config.json.
void link_default_model(const ScratchDir& d, const std::string& key, int64_t value) {
  for (const auto& e : fs::directory_iterator(kDefaultModel))
    if (e.path().filename() != "config.json")
      fs::create_symlink(e.path(), d / e.path().filename().string());
  auto j = nlohmann::json::parse(std::ifstream(kDefaultModel / "config.json"));
  j[key] = value;
  std::ofstream(d / "config.json") << j.dump(2);
}

RunnerConfig local_options(const fs::path& dir) {
  RunnerConfig o;
  o.model_dir = dir;
  o.variant = "mlra4";
  o.page_size = 16;
  o.num_pages = 8;
  return o;
}

void copy_fixture(const std::string& rel, const ScratchDir& dir) {
  fs::copy(loader_data(rel), dir.path(), fs::copy_options::recursive);
}

// The byte offset in `file` of tensor `name`'s first element.
size_t tensor_offset(const fs::path& file, const std::string& name) {
  const auto bytes = read_bytes(file);
  const auto index =
      index_torch_bin({reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()}, "f");
  for (const auto& t : index.tensors)
    if (t.name == name) return size_t(t.data - reinterpret_cast<const std::byte*>(bytes.data()));
  FAIL("no tensor " << name);
  return 0;
}

// Rewrites the CRC-32 fields (central directory and local header) of the zip entry whose data
// starts at or before `offset` and covers it, so a deliberate edit passes the checksum.
void fix_crc(std::vector<char>& b, size_t offset) {
  const auto u16 = [&](size_t p) {
    return uint32_t(uint8_t(b[p])) | uint32_t(uint8_t(b[p + 1])) << 8;
  };
  const auto u32 = [&](size_t p) { return u16(p) | u16(p + 2) << 16; };
  for (size_t p = 0; p + 46 <= b.size(); ++p) {
    if (u32(p) != 0x02014b50) continue;
    const size_t size = u32(p + 24), local = u32(p + 42);
    const size_t data = local + 30 + u16(local + 26) + u16(local + 28);
    if (offset < data || offset >= data + size) continue;
    const uint32_t crc =
        uint32_t(crc32(0, reinterpret_cast<const Bytef*>(b.data() + data), uInt(size)));
    for (size_t at : {p + 16, local + 14})
      for (int k = 0; k < 4; ++k) b[at + size_t(k)] = char(crc >> (8 * k));
    return;
  }
  FAIL("no zip entry covers offset " << offset);
}

}  // namespace

TEST_CASE("a config.json that disagrees with the tensors is refused by both runners",
          "[integrity][checkpoint]") {
  struct Case {
    std::string key;
    int64_t value;
    std::vector<std::string> message;
  };
  const std::vector<Case> cases = {
      {"vocab_size", 60000, {"transformer.wte.weight", "[50304,192]", "[60000,192]"}},
      {"n_layer", 3, {"unexpected tensor 'transformer.h.3.", "n_layer 3"}},
      {"n_layer", 5, {"missing tensor transformer.h.4."}},
      {"qk_rope_head_dim", 16, {"transformer.h.0.attn.q_b_proj.weight", "[320,128]", "[256,128]"}},
      {"intermediate_size", 256, {"mlp.c_fc1.weight", "[512,192]", "[256,192]"}},
  };
  for (const auto& c : cases) {
    INFO(c.key << " = " << c.value);
    ScratchDir d("config_vs_tensors");
    link_default_model(d, c.key, c.value);
    try {
      make_local_runner(local_options(d.path()));
      FAIL("the in-process runner loaded a mismatched config");
    } catch (const CheckpointError& e) {
      const std::string what = e.what();
      CHECK(what.find('\n') == std::string::npos);
      for (const auto& part : c.message) CHECK_THAT(what, Contains(part));
    }
  }
  // TP workers load through the same check and report it as the runner's error.
  ScratchDir d("config_vs_tensors_tp");
  link_default_model(d, "vocab_size", 60000);
  RunnerConfig o;
  o.model_dir = d.path();
  o.variant = "mlra4";
  o.tp = 2;
  o.page_size = 16;
  o.num_pages = 8;
  WorkerProcessOptions process;
  process.worker_binary = fs::path(MLRA_BINARY_DIR) / "server" / "mlra-serve";
  process.load_timeout_s = 60;
  CHECK_THROWS_WITH(make_runner(o, process), Contains("transformer.wte.weight") &&
                                                 Contains("[50304,192]") &&
                                                 Contains("[60000,192]"));
}

TEST_CASE("a shard with 4 KB overwritten is refused: CRC-32, or NaN where it shows first",
          "[integrity][checkpoint]") {
  const std::string shard = "pytorch_model-00001-of-00002.bin";
  const auto original = read_bytes(kDefaultModel / shard);
  const size_t at = tensor_offset(kDefaultModel / shard, "transformer.wte.weight") + 8192;
  // 0x3C bytes are ordinary bf16 values (1.15): only the checksum can tell.
  for (const char fill : {char(0x3C), char(0xFF)}) {
    INFO("fill " << int(uint8_t(fill)));
    ScratchDir d("crc");
    link_default_model(d, "n_layer", 4);
    fs::remove(d / shard);
    auto bytes = original;
    std::fill(bytes.begin() + long(at), bytes.begin() + long(at) + 4096, fill);
    write_bytes(d / shard, bytes);
    // The checksum runs beside the weight loading; 0xFF (bf16 NaN) may be read first.
    if (fill == char(0x3C))
      CHECK_THROWS_WITH(make_local_runner(local_options(d.path())),
                        Contains(shard) && Contains("CRC-32 mismatch") && Contains("zip entry"));
    else
      CHECK_THROWS_WITH(
          make_local_runner(local_options(d.path())),
          Contains(shard) && (Contains("CRC-32 mismatch") || Contains("non-finite value (nan)")));
    CHECK_THROWS_WITH(load_model(d.path(), *parse_variant("mlra4")),
                      Contains(shard) && Contains("CRC-32 mismatch"));
  }
}

TEST_CASE("non-finite weights are refused, naming the tensor and the element",
          "[integrity][checkpoint]") {
  SECTION("torch .bin whose CRC-32 was rewritten to match (bf16 0xFFFF is a NaN)") {
    ScratchDir d("nan_bin");
    copy_fixture("tiny_mlra4_bin", d);
    const fs::path shard = d / "pytorch_model-00001-of-00002.bin";
    auto bytes = read_bytes(shard);
    const std::string name = "transformer.h.0.attn.q_a_proj.weight";  // bf16 [16, 32]
    const size_t at = tensor_offset(shard, name) + 2 * (3 * 32 + 5);
    bytes[at] = bytes[at + 1] = char(0xFF);
    fix_crc(bytes, at);
    write_bytes(shard, bytes);
    auto ckpt = Checkpoint::open(d.path());
    CHECK_NOTHROW(verify_checkpoint_checksums(*ckpt));
    CHECK_THROWS_WITH(ckpt->read_f32(name),
                      Contains(name) && Contains("nan") && Contains("[3, 5]"));
    // A slice that skips the bad row reads; one that holds it names the same element.
    CHECK_NOTHROW(ckpt->read_f32(name, {{4, 16}, {0, 32}}));
    CHECK_THROWS_WITH(ckpt->read_f32(name, {{2, 4}, {4, 8}}), Contains("[3, 5]"));
    CHECK_THROWS_WITH(make_local_runner(local_options(d.path())), Contains(name));
  }
  SECTION("safetensors (no checksum): infinity in an F32 tensor") {
    ScratchDir d("inf_st");
    write_safetensors(d / "model.safetensors", {{"w", {4, 6}}});
    auto bytes = read_bytes(d / "model.safetensors");
    const float inf = std::numeric_limits<float>::infinity();
    std::memcpy(bytes.data() + bytes.size() - 4, &inf, 4);  // the last element, [3, 5]
    write_bytes(d / "model.safetensors", bytes);
    CHECK_THROWS_WITH(Checkpoint::open(d.path())->read_f32("w"),
                      Contains("'w'") && Contains("inf") && Contains("[3, 5]"));
  }
}

TEST_CASE("parallel CRC-32 equals one pass, and the rank shares cover every region once",
          "[integrity]") {
  std::mt19937 rng(5);
  std::vector<char> data(size_t(70) << 20);  // crosses the 32 MiB chunk size twice
  for (auto& c : data) c = char(rng());
  const auto all =
      std::span<const std::byte>(reinterpret_cast<const std::byte*>(data.data()), data.size());
  std::vector<ChecksummedRegion> regions;
  for (size_t begin : {size_t(0), size_t(1), size_t(33) << 20, size_t(70) << 20}) {
    for (size_t len : {size_t(0), size_t(7), size_t(1) << 20, data.size()}) {
      if (begin + len > data.size()) continue;
      const auto bytes = all.subspan(begin, len);
      const uint32_t crc =
          uint32_t(crc32(0, reinterpret_cast<const Bytef*>(bytes.data()), uInt(0)));
      std::string where = "region ";
      where += std::to_string(regions.size());
      regions.push_back(
          {where, bytes,
           uint32_t(crc32_z(crc, reinterpret_cast<const Bytef*>(bytes.data()), bytes.size()))});
    }
  }
  for (int threads : {1, 2, 5}) CHECK_NOTHROW(verify_regions(regions, 0, 1, threads));
  for (int parts : {1, 2, 3, 8}) {
    std::vector<int> seen(regions.size(), 0);
    for (int p = 0; p < parts; ++p) {
      for (size_t i : regions_of_part(regions, p, parts)) ++seen[i];
      CHECK_NOTHROW(verify_regions(regions, p, parts, 2));
    }
    CHECK(std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; }));
  }
  auto bad = regions;
  bad.back().crc32 ^= 1;
  CHECK_THROWS_WITH(verify_regions(bad, 0, 1, 3),
                    Contains(bad.back().where) && Contains("CRC-32 mismatch"));
}

TEST_CASE("a FIFO where a shard or config.json belongs is named, and nothing blocks",
          "[integrity][checkpoint]") {
  ScratchDir d("fifo");
  copy_fixture("tiny_mlra4_bin", d);
  fs::remove(d / "pytorch_model-00002-of-00002.bin");
  REQUIRE(mkfifo((d / "pytorch_model-00002-of-00002.bin").c_str(), 0600) == 0);
  CHECK_THROWS_WITH(Checkpoint::open(d.path()), Contains("pytorch_model-00002-of-00002.bin") &&
                                                    Contains("FIFO") && !Contains("missing"));
  fs::remove(d / "config.json");
  REQUIRE(mkfifo((d / "config.json").c_str(), 0600) == 0);
  CHECK_THROWS_WITH(load_model_config(d / "config.json", *parse_variant("mlra4")),
                    Contains("config.json") && Contains("not a regular file"));
}
