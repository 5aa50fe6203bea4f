// models/decode_products.h against the forward itself: a CPU backend wrapper records the shape and
// layout of every weight product a decode step issues (linear, linear_batched, linear_swiglu; the
// latent projections through their composition), on every rank of every tiny variant at TP 1/2/4
// (and MLA's TPLA at TP 2), and the set must equal decode_products(config, plan, options). The
// wrapper answers latent_uk_layouts as the CUDA backend does under the kernel option latent_uk_t:
// w_uk only under 0, the w_uk_t copy under 1 (the composition then multiplies by w_uk_t).
#include <catch2/catch.hpp>

#include <filesystem>
#include <random>
#include <set>
#include <thread>
#include <tuple>

#include "kernels/communicator.h"
#include "kernels/thread_communicator.h"
#include "models/decode_products.h"
#include "models/model_config.h"
#include "models/shard_plan.h"
#include "models/synthetic_checkpoint.h"
#include "models/transformer.h"
#include "step_builder.h"

using namespace mlra;
using mlra::testing::build_step;
using mlra::testing::SeqChunk;

namespace {

using Key = std::tuple<int64_t, int64_t, int64_t, bool, bool>;  // N, K, batch, glu, out_by_in

// The CPU backend, recording the products whose x has `rows` rows while `on`. Products over
// other row counts (the TPA combine: one row per local head) are not weight products of the step.
class RecordingBackend final : public Backend {
 public:
  bool on = false;
  int64_t rows = 0;
  std::set<Key> seen;
  explicit RecordingBackend(bool uk_t) : uk_t_(uk_t) {}

  DeviceKind kind() const override { return b_->kind(); }
  std::string name() const override { return b_->name(); }
  DType weight_dtype() const override { return b_->weight_dtype(); }
  DType act_dtype() const override { return b_->act_dtype(); }
  DType cache_dtype() const override { return b_->cache_dtype(); }
  Tensor alloc(const std::vector<int64_t>& s, DType t) override { return b_->alloc(s, t); }
  void upload_f32(Tensor& d, const float* s) override { b_->upload_f32(d, s); }
  void upload(Tensor& d, const void* s, size_t n) override { b_->upload(d, s, n); }
  void download_f32(const MatView& s, float* d) override { b_->download_f32(s, d); }
  void synchronize() override { b_->synchronize(); }
  void linear(const MatView& x, const MatView& w, const MatView& y, float a, float b) override {
    record(x, w.rows, w.cols, 1, false, true);
    b_->linear(x, w, y, a, b);
  }
  void linear_batched(const MatView& x, int64_t xs, const MatView& w, int64_t ws, bool obi,
                      const MatView& y, int64_t ys, int64_t batch, float a, float b) override {
    record(x, obi ? w.rows : w.cols, obi ? w.cols : w.rows, batch, false, obi);
    b_->linear_batched(x, xs, w, ws, obi, y, ys, batch, a, b);
  }
  void linear_swiglu(const MatView& x, const MatView& w12, const MatView& out) override {
    record(x, w12.rows / 2, w12.cols, 1, true, true);
    b_->linear_swiglu(x, w12, out);
  }
  void embed(const int32_t* t, int64_t n, const MatView& table, const MatView& out) override {
    b_->embed(t, n, table, out);
  }
  void rms_norm(const MatView& x, const Tensor& w, float eps, float scale,
                const MatView& out) override {
    b_->rms_norm(x, w, eps, scale, out);
  }
  void rope(const MatView& x, int64_t heads, int64_t stride, int64_t offset, int64_t dim,
            const int32_t* positions, float base) override {
    b_->rope(x, heads, stride, offset, dim, positions, base);
  }
  void silu_mul(const MatView& a, const MatView& b, const MatView& out) override {
    b_->silu_mul(a, b, out);
  }
  void sigmoid_mul(const MatView& gate, const MatView& x) override { b_->sigmoid_mul(gate, x); }
  void add(const MatView& x, const MatView& acc) override { b_->add(x, acc); }
  void scale(const MatView& y, float alpha) override { b_->scale(y, alpha); }
  void cache_write(const MatView& src, const int32_t* slots, const PagedCacheView& cache,
                   int32_t col) override {
    b_->cache_write(src, slots, cache, col);
  }
  void paged_attention(const PagedAttentionArgs& args) override { b_->paged_attention(args); }
  LatentUkLayouts latent_uk_layouts(int64_t n_units, int64_t width) const override {
    if (!uk_t_) return b_->latent_uk_layouts(n_units, width);
    return {false, true};
  }

 private:
  void record(const MatView& x, int64_t n, int64_t k, int64_t batch, bool glu, bool out_by_in) {
    if (on && x.rows == rows) seen.insert({n, k, batch, glu, out_by_in});
  }
  std::unique_ptr<Backend> b_ = make_cpu_backend();
  bool uk_t_;
};

constexpr int32_t kPage = 8, kPagesPerSeq = 4;
constexpr int kSeqs = 5;  // decode rows: no local head count of the 24-head tiny models

// Prefill kSeqs sequences, then one decode step recorded on every rank under `options`; each
// rank's recorded products must be decode_products of its plan under those options.
void check_variant(const ModelConfig& c, int tp, const KernelOptions& options) {
  auto ckpt = make_synthetic_checkpoint(c, 17);
  auto comms =
      tp == 1 ? std::vector<std::unique_ptr<Communicator>>{} : make_thread_communicators(tp);
  if (tp == 1) comms.push_back(make_single_rank_communicator());
  std::vector<std::unique_ptr<RecordingBackend>> backends;
  std::vector<std::unique_ptr<Transformer>> ranks;
  std::vector<ShardPlan> plans;
  for (int r = 0; r < tp; ++r) {
    backends.push_back(std::make_unique<RecordingBackend>(options.latent_uk_t != 0));
    plans.push_back(make_shard_plan(c, tp, r));
    ranks.push_back(std::make_unique<Transformer>(c, plans.back(), *ckpt, *backends.back(),
                                                  *comms[size_t(r)],
                                                  CacheOptions{kPage, kSeqs * kPagesPerSeq}));
  }
  auto run = [&](const StepBatch& step) {
    std::vector<std::vector<float>> out(static_cast<size_t>(tp));
    std::vector<std::thread> threads;
    for (int r = 1; r < tp; ++r)
      threads.emplace_back([&, r] { ranks[size_t(r)]->forward(step, out[size_t(r)]); });
    ranks[0]->forward(step, out[0]);
    for (auto& t : threads) t.join();
  };
  std::vector<SeqChunk> prefill, decode;
  for (int s = 0; s < kSeqs; ++s) {
    prefill.push_back({s, 0, {1, 2, int32_t(s)}, false});
    decode.push_back({s, 3, {int32_t(7 + s)}, false});
  }
  run(build_step(prefill, kPage, kPagesPerSeq));
  for (auto& b : backends) b->on = true, b->rows = kSeqs;
  run(build_step(decode, kPage, kPagesPerSeq));
  for (int r = 0; r < tp; ++r) {
    INFO("rank " << r);
    std::set<Key> listed;
    for (const DecodeProduct& p : decode_products(c, plans[size_t(r)], options))
      listed.insert({p.n, p.k, p.batch, p.glu, p.out_by_in});
    CHECK(backends[size_t(r)]->seen == listed);
  }
}

}  // namespace

TEST_CASE("decode_products lists exactly the weight products a decode step issues",
          "[model][shard][decode_products]") {
  for (const int uk_t : {0, 1}) {
    KernelOptions options;
    options.latent_uk_t = uk_t;
    for (const char* v :
         {"mha", "gqa", "mqa", "gta", "mfa", "tpa", "mla", "gla2", "gla4", "mlra2", "mlra4",
          "gqa_gated", "mla_gated", "gla2_gated", "mlra2_gated", "mlra4_gated"}) {
      const auto dir = std::filesystem::path(MLRA_TEST_DATA) / "tiny" / v;
      ModelConfig c = load_model_config(dir / "config.json", *parse_variant(v));
      c.intermediate_size = 76;  // a K tail at every TP: 76, 38, 19
      for (int tp : {1, 2, 4}) {
        if (!unsupported_tp_reason(c, tp).empty()) continue;
        INFO(v << " tp " << tp << " latent_uk_t " << uk_t);
        check_variant(c, tp, options);
      }
    }
    const auto dir = std::filesystem::path(MLRA_TEST_DATA) / "tiny" / "mla";
    ModelConfig c = load_model_config(dir / "config.json", *parse_variant("mla"));
    c.mla_tp_mode = LatentTpMode::kTpla;
    INFO("mla tpla tp 2 latent_uk_t " << uk_t);
    check_variant(c, 2, options);
  }
}

TEST_CASE("decode_products names the W_UK layout the kernel option latent_uk_t selects",
          "[model][shard][decode_products]") {
  const auto dir = std::filesystem::path(MLRA_TEST_DATA) / "tiny" / "mlra4";
  const ModelConfig c = load_model_config(dir / "config.json", *parse_variant("mlra4"));
  const ShardPlan plan = make_shard_plan(c, 1, 0);
  KernelOptions uk_t;
  uk_t.latent_uk_t = 1;
  const std::vector<DecodeProduct> stored = decode_products(c, plan),
                                   copy = decode_products(c, plan, uk_t);
  REQUIRE(stored.size() == copy.size());
  int w_uk = 0;
  for (size_t i = 0; i < stored.size(); ++i) {
    INFO(stored[i].name << " / " << copy[i].name);
    if (stored[i].name == "w_uk") {
      // Per head [dn, width] as stored, against the [width, dn] copy: the same N, K and heads.
      ++w_uk;
      CHECK_FALSE(stored[i].out_by_in);
      CHECK(copy[i].name == "w_uk_t");
      CHECK(copy[i].out_by_in);
      CHECK(std::tie(copy[i].n, copy[i].k, copy[i].batch) ==
            std::tie(stored[i].n, stored[i].k, stored[i].batch));
      CHECK(stored[i].n == plan.latent_width);
      CHECK(stored[i].k == c.qk_nope_head_dim);
    } else {
      CHECK(copy[i].name == stored[i].name);
      CHECK(copy[i].out_by_in);
      CHECK(stored[i].out_by_in);
    }
  }
  CHECK(w_uk == 1);  // MLRA-4's four units at TP1 have one shape
}
