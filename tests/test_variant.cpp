// Variant names, sibling existence, config validation, and the variant traits table: its rows are
// consistent, the TP plan and cache layout follow from them, and every tiny model asks the backend
// for its row's attention kernel family (a recording backend over the CPU reference).
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "kernels/communicator.h"
#include "models/checkpoint.h"
#include "models/latent_expansion.h"
#include "models/model_config.h"
#include "models/shard_plan.h"
#include "models/tensor_layout.h"
#include "models/transformer.h"
#include "models/variant.h"
#include "models/variant_traits.h"
#include "step_builder.h"

using namespace mlra;

TEST_CASE("variant names parse in every spelling and unknown siblings are refused") {
  CHECK(parse_variant("MLRA-4")->kind == AttentionKind::kMlra4);
  CHECK(parse_variant("mlra_2")->kind == AttentionKind::kMlra2);
  CHECK(parse_variant("gla_2_gated")->gated);
  CHECK(parse_variant("mla_no_scale")->no_scale);
  CHECK_FALSE(parse_variant("mha_gated").has_value());
  CHECK_FALSE(parse_variant("mlra4_no_scale").has_value());
  CHECK_FALSE(parse_variant("llama").has_value());
  for (const auto& v : all_variants()) CHECK(parse_variant(v.name()) == v);
}

static nlohmann::json latent_2p9b() {
  return {{"n_layer", 24},           {"n_head", 24},
          {"n_embd", 3072},          {"intermediate_size", 9880},
          {"vocab_size", 50304},     {"block_size", 2048},
          {"q_lora_rank", 1024},     {"kv_lora_rank", 512},
          {"qk_nope_head_dim", 128}, {"qk_rope_head_dim", 64}};
}

TEST_CASE("2.9B parameter counts match models/VARIANTS.md 2.2") {
  auto j = latent_2p9b();
  CHECK(parse_model_config(j, *parse_variant("mlra4")).param_count() == 2873220096LL);
  j["intermediate_size"] = 10048;
  CHECK(parse_model_config(j, *parse_variant("mlra2")).param_count() == 2872630272LL);
  CHECK(parse_model_config(j, *parse_variant("gla2")).param_count() == 2872630272LL);
  j["intermediate_size"] = 9448;
  j["q_lora_rank"] = 1536;
  CHECK(parse_model_config(j, *parse_variant("mla")).param_count() == 2872052736LL);
  nlohmann::json m = {{"n_layer", 24},       {"n_head", 24},
                      {"n_embd", 3072},      {"intermediate_size", 8192},
                      {"vocab_size", 50304}, {"head_dim", 128}};
  CHECK(parse_model_config(m, *parse_variant("mha")).param_count() == 2872593408LL);
  m["intermediate_size"] = 9728;
  m["group_size"] = 4;
  CHECK(parse_model_config(m, *parse_variant("gqa")).param_count() == 2872593408LL);
}

TEST_CASE("missing and inconsistent fields name the field") {
  auto j = latent_2p9b();
  j.erase("kv_lora_rank");
  CHECK_THROWS_WITH(parse_model_config(j, *parse_variant("mlra4")),
                    Catch::Contains("kv_lora_rank"));
  nlohmann::json g = {
      {"n_layer", 2},        {"n_head", 24},    {"n_embd", 3072},  {"intermediate_size", 64},
      {"vocab_size", 50304}, {"head_dim", 128}, {"group_size", 11}};
  CHECK_THROWS_WITH(parse_model_config(g, *parse_variant("gqa")), Catch::Contains("group_size"));
}

TEST_CASE("variant traits: one consistent row per kind", "[variant][traits]") {
  const auto rows = all_variant_traits();
  REQUIRE(rows.size() == 11);
  std::set<std::string> names;
  for (size_t i = 0; i < rows.size(); ++i) {
    const VariantTraits& t = rows[i];
    INFO(t.name);
    CHECK(size_t(t.kind) == i);
    CHECK(&traits(t.kind) == &t);
    CHECK(names.insert(t.name).second);
    CHECK(kind_name(t.kind) == t.name);
    const Variant v{t.kind, false, false};
    CHECK(v.is_latent() == (t.family == AttentionFamily::kLatent));
    if (t.family == AttentionFamily::kLatent) {
      CHECK(t.cache == CacheLayout::kLatentRope);
      CHECK(t.kernel == AttentionKernel::kLatent);
      CHECK(t.kv_heads == KvHeadMap::kNone);
      CHECK((t.num_latents == 1 || t.num_latents == 2 || t.num_latents == 4));
      CHECK(t.latent_head_groups >= 1);
      CHECK(t.num_latents % t.latent_head_groups == 0);
    } else {
      CHECK(t.cache != CacheLayout::kLatentRope);
      CHECK(t.kv_heads != KvHeadMap::kNone);
      CHECK(t.num_latents == 0);
      CHECK(t.prefill == PrefillForm::kAsDecode);
    }
  }
  // The rows the kernels and the prefill form depend on.
  CHECK(traits(AttentionKind::kGqa).kernel == AttentionKernel::kKv);
  CHECK(traits(AttentionKind::kGta).kernel == AttentionKernel::kGeneric);
  CHECK(traits(AttentionKind::kMla).prefill == PrefillForm::kAbsorbedOrExpanded);
  CHECK(traits(AttentionKind::kGla4).prefill == PrefillForm::kAbsorbedOrExpanded);
  CHECK(traits(AttentionKind::kMlra4).prefill == PrefillForm::kAsDecode);
  CHECK(traits(AttentionKind::kMlra2).prefill == PrefillForm::kAsDecode);
  CHECK_THROWS_AS(traits(AttentionKind(99)), std::out_of_range);
}

TEST_CASE("variant traits: latent units and KV heads follow from the rows", "[variant][traits]") {
  ModelConfig c;
  c.n_head = 8;
  auto units = [&](AttentionKind k) {
    c.variant = {k, false, false};
    std::vector<std::array<int, 3>> out;
    for (const LatentUnit& u : latent_units(c)) out.push_back({u.latent, u.head_begin, u.head_end});
    return out;
  };
  using U = std::vector<std::array<int, 3>>;
  CHECK(units(AttentionKind::kMla) == U{{0, 0, 8}});
  CHECK(units(AttentionKind::kGla2) == U{{0, 0, 4}, {1, 4, 8}});
  CHECK(units(AttentionKind::kGla4) == U{{0, 0, 2}, {1, 2, 4}, {2, 4, 6}, {3, 6, 8}});
  // MLRA-2: branch A = latents {0, 1}, branch B = {2, 3}; latent l serves head half l % 2.
  CHECK(units(AttentionKind::kMlra2) == U{{0, 0, 4}, {2, 0, 4}, {1, 4, 8}, {3, 4, 8}});
  CHECK(units(AttentionKind::kMlra4) == U{{0, 0, 8}, {1, 0, 8}, {2, 0, 8}, {3, 0, 8}});
  CHECK(units(AttentionKind::kGqa).empty());

  c.group_size = 4;
  auto kv_of = [&](AttentionKind k, int h) {
    c.variant = {k, false, false};
    return kv_head_of(c, h);
  };
  CHECK(kv_of(AttentionKind::kMha, 5) == 5);
  CHECK(kv_of(AttentionKind::kTpa, 5) == 5);
  CHECK(kv_of(AttentionKind::kGqa, 5) == 1);
  CHECK(kv_of(AttentionKind::kGta, 7) == 1);
  CHECK(kv_of(AttentionKind::kMfa, 7) == 0);
  c.group_size = 8;
  CHECK(kv_of(AttentionKind::kMqa, 7) == 0);
  CHECK_THROWS_AS(kv_of(AttentionKind::kMla, 0), std::logic_error);
}

namespace {

// The CPU reference, recording the kernel family of every paged-attention call.
class RecordingBackend final : public Backend {
 public:
  std::vector<AttentionKernel> kernels;

  DeviceKind kind() const override { return cpu_->kind(); }
  std::string name() const override { return cpu_->name(); }
  DType weight_dtype() const override { return cpu_->weight_dtype(); }
  DType act_dtype() const override { return cpu_->act_dtype(); }
  DType cache_dtype() const override { return cpu_->cache_dtype(); }
  Tensor alloc(const std::vector<int64_t>& shape, DType dtype) override {
    return cpu_->alloc(shape, dtype);
  }
  void upload_f32(Tensor& dst, const float* src) override { cpu_->upload_f32(dst, src); }
  void upload(Tensor& dst, const void* src, size_t bytes) override {
    cpu_->upload(dst, src, bytes);
  }
  void download_f32(const MatView& src, float* dst) override { cpu_->download_f32(src, dst); }
  void synchronize() override { cpu_->synchronize(); }
  void linear(const MatView& x, const MatView& w, const MatView& y, float alpha,
              float beta) override {
    cpu_->linear(x, w, y, alpha, beta);
  }
  void linear_batched(const MatView& x, int64_t xs, const MatView& w, int64_t ws, bool out_by_in,
                      const MatView& y, int64_t ys, int64_t batch, float alpha,
                      float beta) override {
    cpu_->linear_batched(x, xs, w, ws, out_by_in, y, ys, batch, alpha, beta);
  }
  void embed(const int32_t* tokens, int64_t n, const MatView& table, const MatView& out) override {
    cpu_->embed(tokens, n, table, out);
  }
  void rms_norm(const MatView& x, const Tensor& w, float eps, float scale,
                const MatView& out) override {
    cpu_->rms_norm(x, w, eps, scale, out);
  }
  void rope(const MatView& x, int64_t n_heads, int64_t head_stride, int64_t rot_offset,
            int64_t rot_dim, const int32_t* positions, float base) override {
    cpu_->rope(x, n_heads, head_stride, rot_offset, rot_dim, positions, base);
  }
  void silu_mul(const MatView& a, const MatView& b, const MatView& out) override {
    cpu_->silu_mul(a, b, out);
  }
  void sigmoid_mul(const MatView& gate, const MatView& x) override { cpu_->sigmoid_mul(gate, x); }
  void add(const MatView& x, const MatView& acc) override { cpu_->add(x, acc); }
  void scale(const MatView& y, float alpha) override { cpu_->scale(y, alpha); }
  void cache_write(const MatView& src, const int32_t* slots, const PagedCacheView& cache,
                   int32_t col_offset) override {
    cpu_->cache_write(src, slots, cache, col_offset);
  }
  void paged_attention(const PagedAttentionArgs& args) override {
    kernels.push_back(args.kernel);
    cpu_->paged_attention(args);
  }

 private:
  std::unique_ptr<Backend> cpu_ = make_cpu_backend();
};

}  // namespace

TEST_CASE("every variant asks the backend for its traits' attention kernel family",
          "[variant][traits][model]") {
  for (const Variant& v : all_variants()) {
    const auto dir = std::filesystem::path(MLRA_TEST_DATA) / "tiny" / v.name();
    if (!std::filesystem::exists(dir / "config.json")) continue;
    for (const LatentPrefill mode : {LatentPrefill::kAbsorbed, LatentPrefill::kExpanded}) {
      INFO(v.name() << " prefill " << latent_prefill_name(mode));
      ModelConfig c = load_model_config(dir / "config.json", v);
      c.latent_prefill.mode = mode;
      const ShardPlan plan = make_shard_plan(c, 1, 0);
      auto ckpt = Checkpoint::open(dir);
      RecordingBackend backend;
      auto comm = make_single_rank_communicator();
      Transformer model(c, plan, *ckpt, backend, *comm, {16, 16});
      std::vector<int32_t> prompt(20);
      for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = int32_t(i * 7 % 200);
      std::vector<float> logits;
      model.forward(testing::build_step({{0, 0, prompt}}, 16, 8), logits);
      const std::vector<AttentionKernel> prefill = backend.kernels;
      backend.kernels.clear();
      model.forward(testing::build_step({{0, 20, {prompt[0]}}}, 16, 8), logits);
      const std::vector<AttentionKernel> decode = backend.kernels;
      const AttentionKernel want = traits(v.kind).kernel;
      REQUIRE(decode.size() == size_t(c.n_layer));
      for (AttentionKernel k : decode) CHECK(k == want);
      const bool expanded = mode == LatentPrefill::kExpanded && latent_expansion_supported(c);
      REQUIRE(prefill.size() == size_t(c.n_layer));
      for (AttentionKernel k : prefill)
        CHECK(k == (expanded ? AttentionKernel::kKvSharedRope : want));
    }
  }
}
