// [integrity] Integrity::kSkip, the seam `mlra-bench load` times the integrity checks with: it
// skips exactly the shape validation, the CRC-32 pass and the finiteness check (the variant check
// still runs), and nothing on the serving path (engine/, server/ outside the benchmarks) can name
// it, so every served load verifies.
#include <catch2/catch.hpp>

#include <fstream>
#include <regex>
#include <sstream>

#include "models/checkpoint_integrity.h"
#include "models/model_loader.h"
#include "models/torch_bin_file.h"
#include "models/variant.h"
#include "tests/checkpoint_test_util.h"

using namespace mlra;
using namespace mlra::test;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

TEST_CASE("Integrity::kSkip skips the shape, CRC-32 and finiteness checks and nothing else",
          "[integrity][checkpoint]") {
  ScratchDir d("integrity_seam");
  fs::copy(loader_data("tiny_mlra4_bin"), d.path(), fs::copy_options::recursive);
  const fs::path shard = d / "pytorch_model-00001-of-00002.bin";
  const std::string name = "transformer.h.0.attn.q_a_proj.weight";  // bf16 [16, 32]
  auto bytes = read_bytes(shard);
  size_t at = 0;
  for (const auto& t :
       index_torch_bin({reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()}, "f")
           .tensors)
    if (t.name == name) at = size_t(t.data - reinterpret_cast<const std::byte*>(bytes.data()));
  REQUIRE(at > 0);
  at += 2 * (3 * 32 + 5);  // element [3, 5] becomes a bf16 NaN; the zip's CRC-32 is left stale
  bytes[at] = bytes[at + 1] = char(0xFF);
  write_bytes(shard, bytes);
  const Variant mlra4 = *parse_variant("mlra4");
  const ModelConfig config = load_model_config(d / "config.json", mlra4);
  ModelConfig wrong_vocab = config;
  wrong_vocab.vocab_size += 8;

  // The default (what the runners call) refuses each defect.
  CHECK_THROWS_WITH(open_checked_checkpoint(d.path(), wrong_vocab),
                    Contains("transformer.wte.weight"));
  CheckedCheckpoint checked = open_checked_checkpoint(d.path(), config);
  REQUIRE(checked.checksums);
  CHECK_THROWS_WITH(checked.checksums->wait(), Contains("CRC-32 mismatch"));
  CHECK_THROWS_WITH(checked.checkpoint->read_f32(name), Contains("nan") && Contains("[3, 5]"));

  // kSkip loads all three and reads the NaN as it is.
  CheckedCheckpoint skipped =
      open_checked_checkpoint(d.path(), wrong_vocab, 0, 1, Integrity::kSkip);
  CHECK_FALSE(skipped.checksums);
  const std::vector<float> w = skipped.checkpoint->read_f32(name);
  CHECK(std::isnan(w[3 * 32 + 5]));
  CHECK(std::isfinite(w[3 * 32 + 4]));

  // The variant check is not an integrity check: kSkip keeps it.
  const ModelConfig mla = load_model_config(d / "config.json", *parse_variant("mla"));
  CHECK_THROWS_AS(open_checked_checkpoint(d.path(), mla, 0, 1, Integrity::kSkip), CheckpointError);
}

TEST_CASE("nothing on the serving path can name Integrity, so every served load verifies",
          "[integrity]") {
  const fs::path root = MLRA_SOURCE_DIR;
  const std::regex word(R"(\bIntegrity\b)");
  int scanned = 0;
  for (const char* floor : {"engine", "server"}) {
    for (const auto& e : fs::recursive_directory_iterator(root / floor)) {
      const fs::path rel = fs::relative(e.path(), root);
      if (!e.is_regular_file() || rel.string().rfind("server/bench/", 0) == 0) continue;
      const std::string ext = rel.extension().string();
      if (ext != ".h" && ext != ".cpp" && ext != ".cu") continue;
      std::ostringstream text;
      text << std::ifstream(e.path()).rdbuf();
      INFO(rel.string());
      CHECK_FALSE(std::regex_search(text.str(), word));
      ++scanned;
    }
  }
  CHECK(scanned > 20);
  // The benchmark is where it is meant to be named (the scan looks at the right tree).
  std::ostringstream bench;
  bench << std::ifstream(root / "server/bench/bench_load.cpp").rdbuf();
  CHECK(std::regex_search(bench.str(), word));
}
