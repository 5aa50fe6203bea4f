// [checkpoint][fuzz] randomized corruption of real fixtures (bit flips, byte overwrites,
// truncations, splices of another region, duplicated ranges): opening and reading every tensor
// must either succeed or throw CheckpointError, never crash and never throw anything else.
#include <catch2/catch.hpp>

#include <chrono>

#include <spdlog/spdlog.h>

#include "models/checkpoint.h"
#include "tests/checkpoint_test_util.h"

using namespace mlra;
using namespace mlra::test;

namespace {

std::vector<char> mutate(std::vector<char> b, std::mt19937& rng) {
  auto pos = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n ? n - 1 : 0)(rng); };
  const int edits = std::uniform_int_distribution<int>(1, 4)(rng);
  for (int e = 0; e < edits && !b.empty(); ++e) {
    switch (std::uniform_int_distribution<int>(0, 4)(rng)) {
      case 0:
        b[pos(b.size())] ^= static_cast<char>(1 << pos(8));
        break;
      case 1:
        b[pos(b.size())] = static_cast<char>(rng());
        break;
      case 2:
        b.resize(pos(b.size()));
        break;
      case 3: {  // splice: copy one region over another
        const size_t from = pos(b.size()), to = pos(b.size());
        const size_t n = std::min({pos(64) + 1, b.size() - from, b.size() - to});
        std::memmove(b.data() + to, b.data() + from, n);
        break;
      }
      case 4: {  // insert a duplicate of a region
        const size_t from = pos(b.size()), n = std::min(pos(32) + 1, b.size() - from);
        std::vector<char> piece(b.begin() + from, b.begin() + from + n);
        b.insert(b.begin() + pos(b.size()), piece.begin(), piece.end());
        break;
      }
    }
  }
  return b;
}

// Opens and fully reads; returns true on success. Anything but CheckpointError escapes.
bool open_and_read(const std::filesystem::path& dir) {
  try {
    auto ck = Checkpoint::open(dir);
    for (const auto& n : ck->names()) ck->read_f32(n);
    return true;
  } catch (const CheckpointError&) {
    return false;
  }
}

}  // namespace

TEST_CASE("fuzzed checkpoints only ever raise CheckpointError", "[checkpoint][fuzz]") {
  struct Target {
    std::string fixture, file;
  };
  const std::vector<Target> targets = {
      {"features", "pytorch_model.bin"},
      {"features_zip64", "pytorch_model.bin"},
      {"features_archive", "pytorch_model.bin"},
      {"features_st", "model.safetensors"},
      {"tiny_mlra4_bin", "pytorch_model.bin.index.json"},
      {"tiny_mlra4_st", "model-00002-of-00002.safetensors"},
  };
  std::mt19937 rng(20240520);
  const auto level = spdlog::get_level();
  spdlog::set_level(spdlog::level::err);  // mutated indexes warn about unlisted tensors
  const auto start = std::chrono::steady_clock::now();
  int iterations = 0, survived = 0;
  for (const auto& t : targets) {
    ScratchDir dir("fuzz");
    std::filesystem::copy(loader_data(t.fixture), dir.path(),
                          std::filesystem::copy_options::recursive);
    const auto original = read_bytes(dir / t.file);
    for (int i = 0; i < 1500; ++i, ++iterations) {
      write_bytes(dir / t.file, mutate(original, rng));
      survived += open_and_read(dir.path()) ? 1 : 0;
    }
  }
  spdlog::set_level(level);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  INFO(iterations << " iterations, " << survived << " still loadable, " << s << " s");
  CHECK(iterations == 9000);
  CHECK(survived < iterations);  // the mutations do break files
  CHECK(s < 20.0);
}

TEST_CASE("fuzzed pickle streams inside a valid zip only raise CheckpointError",
          "[checkpoint][fuzz]") {
  // Mutating the whole .bin mostly breaks the zip directory; this targets the unpickler itself by
  // re-running it on mutated data.pkl bytes through a hand-built stored zip.
  const auto pkl = read_bytes(loader_data("errors/handwritten_ok/pytorch_model.bin"));
  std::mt19937 rng(7);
  ScratchDir dir("fuzzpkl");
  int ok = 0;
  for (int i = 0; i < 1500; ++i) {
    // Stored-entry zips keep data.pkl's bytes verbatim, so flipping bytes inside its range
    // (offset 30 + name length .. + size) keeps the directory valid while corrupting the pickle.
    auto b = pkl;
    const size_t begin = 30 + std::strlen("archive/data.pkl");
    const size_t len = 167;  // data.pkl size of this fixture
    for (int e = 0; e < 3; ++e)
      b[begin + std::uniform_int_distribution<size_t>(0, len - 1)(rng)] = static_cast<char>(rng());
    write_bytes(dir / "pytorch_model.bin", b);
    ok += open_and_read(dir.path()) ? 1 : 0;
  }
  CHECK(ok < 1500);
}
