// Padded row pitches in the model (weight_loader.h padded_ld): the MLP down-projection and its
// input are stored with rows of padded_ld(K) when a rank's intermediate size K is not a multiple
// of 8, so the CUDA GEMV takes the product. On the CPU backend this must not change a bit: the
// padded model's logits equal the unpadded one's (row_align 1) exactly, at TP 1, 2 and 4 over
// prefill and decode steps. Also load_padded itself (zero pad, values in place) and its refusals.
#include <catch2/catch.hpp>

#include <filesystem>
#include <random>
#include <thread>

#include "kernels/communicator.h"
#include "kernels/thread_communicator.h"
#include "models/model_config.h"
#include "models/shard_plan.h"
#include "models/synthetic_checkpoint.h"
#include "models/transformer.h"
#include "models/weight_loader.h"
#include "step_builder.h"

using namespace mlra;
using mlra::testing::build_step;
using mlra::testing::SeqChunk;

namespace {

constexpr int32_t kPage = 8, kPagesPerSeq = 8;

// The ranks of one model on threads, every rank's weights stored with `row_align`.
class Ranks {
 public:
  Ranks(const ModelConfig& c, const Checkpoint& ckpt, int tp, int64_t row_align) {
    if (tp == 1)
      comms_.push_back(make_single_rank_communicator());
    else
      comms_ = make_thread_communicators(tp);
    for (int r = 0; r < tp; ++r) backends_.push_back(make_cpu_backend());
    for (int r = 0; r < tp; ++r)
      ranks_.push_back(std::make_unique<Transformer>(
          c, make_shard_plan(c, tp, r), ckpt, *backends_[size_t(r)], *comms_[size_t(r)],
          CacheOptions{kPage, 4 * kPagesPerSeq}, row_align));
  }
  std::vector<float> run(const StepBatch& step) {
    std::vector<std::vector<float>> out(ranks_.size());
    std::vector<std::thread> threads;
    for (size_t r = 1; r < ranks_.size(); ++r)
      threads.emplace_back([&, r] { ranks_[r]->forward(step, out[r]); });
    ranks_[0]->forward(step, out[0]);
    for (auto& t : threads) t.join();
    return out[0];
  }

 private:
  std::vector<std::unique_ptr<Backend>> backends_;
  std::vector<std::unique_ptr<Communicator>> comms_;
  std::vector<std::unique_ptr<Transformer>> ranks_;
};

ModelConfig tiny_config(const std::string& variant, int64_t intermediate) {
  const auto dir = std::filesystem::path(MLRA_TEST_DATA) / "tiny" / variant;
  ModelConfig c = load_model_config(dir / "config.json", *parse_variant(variant));
  c.intermediate_size = intermediate;
  c.validate();
  return c;
}

}  // namespace

TEST_CASE("padded MLP rows give the unpadded model's logits bit for bit on the CPU",
          "[model][padded_rows]") {
  // 76 rows: 76, 38, 19 per rank at TP 1, 2, 4 (none a multiple of 8: every rank pads).
  for (const char* v : {"mlra4", "gqa", "mla"}) {
    const ModelConfig c = tiny_config(v, 76);
    auto ckpt = make_synthetic_checkpoint(c, 41);
    std::mt19937 rng(7);
    std::vector<int32_t> prompt(11), prompt2(6);
    for (auto& t : prompt) t = int32_t(rng() % uint32_t(c.vocab_size));
    for (auto& t : prompt2) t = int32_t(rng() % uint32_t(c.vocab_size));
    const StepBatch prefill =
        build_step({{0, 0, prompt, true}, {1, 0, prompt2, false}}, kPage, kPagesPerSeq);
    const StepBatch decode =
        build_step({{0, 11, {5}, false}, {1, 6, {9}, false}}, kPage, kPagesPerSeq);
    for (int tp : {1, 2, 4}) {
      if (!unsupported_tp_reason(c, tp).empty()) continue;
      INFO(v << " tp " << tp);
      REQUIRE(padded_ld(c.intermediate_size / tp) != c.intermediate_size / tp);
      Ranks padded(c, *ckpt, tp, kRowAlign), plain(c, *ckpt, tp, 1);
      const std::vector<float> a = padded.run(prefill), b = plain.run(prefill);
      REQUIRE(!a.empty());
      CHECK(a == b);
      const std::vector<float> da = padded.run(decode), db = plain.run(decode);
      REQUIRE(!da.empty());
      CHECK(da == db);
    }
  }
}

TEST_CASE("load_padded stores each row at the padded pitch with zero pad", "[model][padded_rows]") {
  const ModelConfig c = tiny_config("gqa", 76);
  auto ckpt = make_synthetic_checkpoint(c, 3);
  auto cpu = make_cpu_backend();
  WeightLoader w(*ckpt, *cpu);
  const std::string name = "transformer.h.0.mlp.c_proj.weight";
  const int64_t d = c.n_embd;
  for (const Range& cols : {Range{0, 76}, Range{19, 38}, Range{8, 24}}) {
    const int64_t k = cols.second - cols.first, ld = padded_ld(k);
    INFO("cols " << cols.first << ".." << cols.second);
    const Tensor t = w.load_padded(name, {{0, d}, cols}, kRowAlign);
    REQUIRE(t.shape == std::vector<int64_t>{d, ld});
    const std::vector<float> want = w.read(name, {{0, d}, cols});
    const float* got = t.as<float>();
    int64_t wrong = 0;
    for (int64_t r = 0; r < d; ++r)
      for (int64_t j = 0; j < ld; ++j)
        if (got[r * ld + j] != (j < k ? want[size_t(r * k + j)] : 0.0f)) ++wrong;
    CHECK(wrong == 0);
  }
  CHECK(padded_ld(19) == 24);
  CHECK(padded_ld(24) == 24);
  CHECK(padded_ld(19, 1) == 19);
  CHECK_THROWS_AS(w.load_padded(name, {{0, d}, {0, 8}}, 0), std::invalid_argument);
  CHECK_THROWS_AS(w.load_padded("layernorm.weight", {{0, d}}, kRowAlign), std::invalid_argument);
}
