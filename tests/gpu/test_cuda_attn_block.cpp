// Backend::attn_block under the kernel option attn_block 1 (one cooperative persistent launch,
// kernels/attn_block.h) against the CPU composition (linear, rms_norm, linear, latent_queries,
// latent_cache_write) on random inputs at the 2.9B configs' per-rank shapes (MLRA-4 and MLA at
// TP 1/2/4/8, rank 0's heads, latents and units from the shard plan), into a bf16 and an FP8 cache;
// recorded in a CUDA graph and replayed with fresh inputs, positions and slots; and decode steps
// of small models with the option on (alone and with mlp_block) against the CPU.
#include <cuda_bf16.h>
#include <catch2/catch.hpp>

#include <filesystem>
#include <memory>
#include <random>

#include "gpu_decode_fixture.h"
#include "gpu_test_util.h"
#include "kernels/attn_block.h"
#include "models/model_config.h"
#include "models/shard_plan.h"

using namespace mlra;
using namespace mlra::gputest;

namespace {

constexpr int32_t kPageSize = 16;
constexpr int64_t kPages = 8;

// One rank's shapes: d, r_q, dn, dr, the local heads, the local latents (width each) and the units
// (heads relative to the first local head, virtual heads in unit order).
struct Shape {
  int64_t d, r_q, dn, dr, heads, width, groups;
  std::vector<std::pair<int64_t, int64_t>> units;  // head0, n_heads
  int64_t n_virt() const {
    int64_t n = 0;
    for (const auto& u : units) n += u.second;
    return n;
  }
  int64_t na() const { return r_q + groups * width + dr; }
  int64_t row() const { return groups * width + dr; }
};

Shape rank_shape(const char* variant, int tp) {
  const ModelConfig c = load_model_config(
      std::filesystem::path(MLRA_SOURCE_DIR) / "configs/2.9b" / variant / "config.json",
      *parse_variant(variant));
  const ShardPlan plan = make_shard_plan(c, tp, 0);
  Shape s{c.n_embd,
          c.q_lora_rank,
          c.qk_nope_head_dim,
          c.qk_rope_head_dim,
          int64_t(plan.heads.size()),
          plan.latent_width,
          int64_t(plan.latents.size()),
          {}};
  for (const LatentUnit& u : plan.units)
    s.units.push_back({u.head_begin - plan.heads.front(), u.num_heads()});
  return s;
}

// The weights and row inputs of one shape (bf16-rounded values, so both backends see the same).
struct Inputs {
  std::vector<float> x, x_proj, q_norm, q_b_nope, rope_w, latent_norms;
  std::vector<std::vector<float>> w_uk;
  std::vector<int32_t> pos, slot;
};

Inputs make_inputs(const Shape& s, uint32_t seed) {
  std::mt19937 rng(seed);
  const auto vec = [&](int64_t n, float lo, float hi) {
    return rounded(random_vec(rng, size_t(n), lo, hi), DType::kBF16);
  };
  Inputs in;
  const float xs = 1.7f / std::sqrt(float(s.d)), qs = 1.7f / std::sqrt(float(s.r_q));
  in.x = vec(s.d, -1.0f, 1.0f);
  in.x_proj = vec(s.na() * s.d, -xs, xs);
  in.q_norm = vec(s.r_q, 0.5f, 1.5f);
  in.q_b_nope = vec(s.heads * s.dn * s.r_q, -qs, qs);
  in.rope_w = vec(s.heads * s.dr * s.r_q, -qs, qs);
  in.latent_norms = vec(s.groups * s.width, 0.5f, 1.5f);
  const float us = 1.7f / std::sqrt(float(s.dn));
  for (const auto& u : s.units) in.w_uk.push_back(vec(u.second * s.dn * s.width, -us, us));
  in.pos = {int32_t(rng() % 30000)};
  in.slot = {int32_t(rng() % (kPages * kPageSize))};
  return in;
}

// A paged cache of the given encoding on one backend: plain in the backend's dtype, or FP8
// (groups of `width`, k_pe as the bf16 tail).
struct Cache {
  Tensor t;
  PagedCacheView view;
  Cache(Backend& b, const Shape& s, bool fp8) {
    const Fp8CacheLayout l{int32_t(s.groups), int32_t(s.width), int32_t(s.dr)};
    t = fp8 ? b.alloc({kPages * l.page_bytes(kPageSize)}, DType::kU8)
            : b.alloc({kPages * kPageSize, s.row()}, b.cache_dtype());
    view = {t.data, t.dtype, kPages, kPageSize, int32_t(s.row())};
    if (fp8) {
      view.encoding = CacheEncoding::kFp8E4M3;
      view.fp8 = l;
    }
  }
};

struct Outputs {
  std::vector<float> xp, cq, q_nope, qv, entry;
  bool operator==(const Outputs&) const = default;
};

// The op's operands on one backend (CPU: f32; CUDA: bf16). Weights uploaded once, rows per run.
struct Operands {
  Backend& b;
  Shape s;
  Tensor x, x_proj, q_norm, q_b_nope, rope_w, latent_norms, xp, cq, q_nope, qv, pos, slot;
  std::vector<Tensor> w_uk;
  Cache cache;
  Operands(Backend& backend, const Shape& shape, const Inputs& in, bool fp8)
      : b(backend), s(shape), cache(backend, shape, fp8) {
    const DType t = b.kind() == DeviceKind::kCuda ? DType::kBF16 : DType::kF32;
    x = b.alloc({1, s.d}, t);
    x_proj = make(b, {s.na(), s.d}, t, in.x_proj);
    q_norm = make(b, {s.r_q}, t, in.q_norm);
    q_b_nope = make(b, {s.heads * s.dn, s.r_q}, t, in.q_b_nope);
    rope_w = make(b, {s.heads * s.dr, s.r_q}, t, in.rope_w);
    latent_norms = make(b, {s.groups * s.width}, t, in.latent_norms);
    for (size_t u = 0; u < s.units.size(); ++u)
      w_uk.push_back(make(b, {s.units[u].second, s.dn, s.width}, t, in.w_uk[u]));
    xp = b.alloc({1, s.na()}, t);
    cq = b.alloc({1, s.r_q}, t);
    q_nope = b.alloc({1, s.heads * s.dn}, t);
    qv = b.alloc({1, s.n_virt() * (s.width + s.dr)}, t);
    pos = b.alloc({1}, DType::kI32);
    slot = b.alloc({1}, DType::kI32);
  }
  Backend::AttnBlockArgs args() const {
    Backend::AttnBlockArgs a;
    a.x = as_mat(x, s.d);
    a.x_proj = as_mat(x_proj, s.d);
    a.xp = as_mat(xp, s.na());
    a.q_norm = q_norm;
    a.q_scale = 0.8f;
    a.cq = as_mat(cq, s.r_q);
    a.q_b_nope = as_mat(q_b_nope, s.r_q);
    a.q_nope = as_mat(q_nope, s.heads * s.dn);
    a.rope_w = as_mat(rope_w, s.r_q);
    int64_t v0 = 0;
    for (size_t u = 0; u < s.units.size(); ++u) {
      Backend::LatentUnitView view;
      view.w_uk = w_uk[u];
      view.head0 = s.units[u].first;
      view.n_heads = s.units[u].second;
      view.v0 = v0;
      v0 += view.n_heads;
      a.units.push_back(view);
    }
    a.dn = s.dn;
    a.dr = s.dr;
    a.width = s.width;
    a.latent_norms = latent_norms;
    a.groups = s.groups;
    a.kv_scale = 1.3f;
    a.eps = 1e-6f;
    a.positions = pos.as<int32_t>();
    a.rope_base = 10000.0f;
    a.slots = slot.as<int32_t>();
    a.cache = cache.view;
    a.qv = as_mat(qv, s.n_virt() * (s.width + s.dr));
    return a;
  }
  // The kernel's view, as the backend builds it.
  cuda::AttnBlockOperands operands() const {
    cuda::AttnBlockOperands o;
    REQUIRE(cuda::attn_block_operands(args(), o));
    return o;
  }
  void set_rows(const Inputs& in) {
    b.upload_f32(x, in.x.data());
    b.upload(pos, in.pos.data(), 4);
    b.upload(slot, in.slot.data(), 4);
    if (b.kind() == DeviceKind::kCuda)
      for (const Tensor* t : {&xp, &cq, &q_nope, &qv}) poison(b, *t);
  }
  Outputs outputs() {
    Tensor entry = b.alloc({1, s.row()}, b.act_dtype());
    b.cache_gather(cache.view, slot.as<int32_t>(), 1, 0, as_mat(entry, s.row()));
    return {download(b, as_mat(xp, s.na())), download(b, as_mat(cq, s.r_q)),
            download(b, as_mat(q_nope, s.heads * s.dn)),
            download(b, as_mat(qv, s.n_virt() * (s.width + s.dr))),
            download(b, as_mat(entry, s.row()))};
  }
  Outputs run(const Inputs& in) {
    set_rows(in);
    b.attn_block(args());
    return outputs();
  }
};

KernelOptions fused_options(bool mlp_block = false) {
  KernelOptions o;
  o.attn_block = 1;
  o.mlp_block = mlp_block ? 1 : 0;
  return o;
}

void check_close(const Outputs& got, const Outputs& want, double tol, double entry_tol) {
  CHECK(all_finite(got.xp));
  CHECK(all_finite(got.qv));
  CHECK(rel_l2(got.xp, want.xp) < tol);
  CHECK(rel_l2(got.cq, want.cq) < tol);
  CHECK(rel_l2(got.q_nope, want.q_nope) < tol);
  CHECK(rel_l2(got.qv, want.qv) < tol);
  CHECK(rel_l2(got.entry, want.entry) < entry_tol);
}

std::vector<Shape> rank_shapes() {
  std::vector<Shape> shapes;
  for (const char* v : {"mlra_4", "mla"})
    for (const int tp : {1, 2, 4, 8}) shapes.push_back(rank_shape(v, tp));
  return shapes;
}

}  // namespace

TEST_CASE("cuda attn_block (one persistent launch) matches the cpu composition",
          "[gpu][ops][attn_block]") {
  auto& [cpu, gpu] = backends();
  const std::unique_ptr<Backend> fused = make_cuda_backend(0, fused_options());
  cuda::AttnBlockKernel direct(0);
  WARN("attn_block launches with the PDL attribute: " << (direct.uses_pdl() ? "yes" : "no")
                                                      << "; recorded in graphs: "
                                                      << (direct.capturable() ? "yes" : "no"));
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  int index = 0;
  for (const Shape& s : rank_shapes()) {
    for (const bool fp8 : {false, true}) {
      INFO("shape " << index << ": heads " << s.heads << " latents " << s.groups << " width "
                    << s.width << " units " << s.units.size() << (fp8 ? " fp8" : " bf16"));
      const Inputs in = make_inputs(s, seed + uint32_t(index));
      Operands oc(*cpu, s, in, fp8), og(*gpu, s, in, fp8), of(*fused, s, in, fp8);
      const Outputs want = oc.run(in);
      const Outputs composed = og.run(in);
      const Outputs got = of.run(in);
      // An FP8 entry: the CPU quantizes its f32 row, the GPU its bf16 row (a code apart at most).
      const double entry_tol = fp8 ? 6e-2 : kBf16Tol;
      check_close(composed, want, kBf16Tol, entry_tol);
      check_close(got, want, kBf16Tol, entry_tol);
      // Against the device composition: the same rounding points, f32 sums in another order.
      check_close(got, composed, 1e-2, fp8 ? 6e-2 : 1e-2);
      // The backend ran the kernel (deterministic: bitwise equal), every time the same.
      REQUIRE(direct.supports(of.operands()));
      of.set_rows(in);
      direct.launch(of.operands(), cuda_stream_of(*fused));
      CHECK(of.outputs() == got);
      CHECK(of.run(in) == got);
    }
    ++index;
  }
}

TEST_CASE("cuda attn_block replays from a graph with fresh rows, positions and slots",
          "[gpu][ops][attn_block][graph]") {
  auto& [cpu, gpu] = backends();
  const std::unique_ptr<Backend> fused = make_cuda_backend(0, fused_options());
  REQUIRE(cuda::AttnBlockKernel(0).capturable());
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  for (const Shape& s : {rank_shape("mlra_4", 1), rank_shape("mlra_4", 4), rank_shape("mla", 2)})
    for (const bool fp8 : {false, true}) {
      INFO("heads " << s.heads << " latents " << s.groups << (fp8 ? " fp8" : " bf16"));
      const Inputs in1 = make_inputs(s, seed);
      Inputs in2 = make_inputs(s, seed + 1);
      in2.x_proj = in1.x_proj;  // weights are the recording's; rows, position and slot differ
      in2.q_norm = in1.q_norm;
      in2.q_b_nope = in1.q_b_nope;
      in2.rope_w = in1.rope_w;
      in2.latent_norms = in1.latent_norms;
      in2.w_uk = in1.w_uk;
      if (in2.slot == in1.slot) in2.slot[0] = (in1.slot[0] + 1) % int32_t(kPages * kPageSize);
      Operands of(*fused, s, in1, fp8), oc(*cpu, s, in1, fp8);
      const Outputs eager1 = of.run(in1), eager2 = of.run(in2);
      check_close(eager1, oc.run(in1), kBf16Tol, fp8 ? 6e-2 : kBf16Tol);
      check_close(eager2, oc.run(in2), kBf16Tol, fp8 ? 6e-2 : kBf16Tol);
      REQUIRE_FALSE(eager1 == eager2);
      of.set_rows(in1);
      fused->begin_capture();
      fused->attn_block(of.args());
      const std::unique_ptr<CapturedOps> graph = fused->end_capture();
      const Inputs* order[] = {&in1, &in2, &in2, &in1};
      for (const Inputs* in : order) {
        of.set_rows(*in);
        graph->replay();
        CHECK(of.outputs() == (in == &in1 ? eager1 : eager2));
      }
    }
}

TEST_CASE("decode with attn_block 1 (alone and with mlp_block 1) matches the CPU",
          "[gpu][model][attn_block]") {
  for (const char* v : {"mlra_4", "mla", "gla_2"}) {
    const ModelConfig c = release_head_config(v, 1236);
    auto ckpt = make_synthetic_checkpoint(c, 57);
    for (const int tp : {1, 2, 4})
      for (const CacheEncoding enc : {CacheEncoding::kPlain, CacheEncoding::kFp8E4M3}) {
        const bool fp8 = enc == CacheEncoding::kFp8E4M3;
        INFO(v << " tp " << tp << (fp8 ? " fp8 cache" : " bf16 cache"));
        const ShardPlan plan = make_shard_plan(c, tp, 0);
        DecodeSequences seqs({4, 5, 4, 7, false}, c.vocab_size);
        const CacheOptions cache = seqs.cache(enc);
        DecodeModel cpu = cpu_model(c, plan, *ckpt, cache);
        DecodeModel composed = cuda_model(c, plan, *ckpt, cache);
        DecodeModel fused = cuda_model(c, plan, *ckpt, cache, fused_options());
        DecodeModel graphed = cuda_model(c, plan, *ckpt, cache, fused_options(), 8);
        DecodeModel both = cuda_model(c, plan, *ckpt, cache, fused_options(true), 8);
        const std::vector<DecodeModel*> all = {&cpu, &composed, &fused, &graphed, &both};
        forward_all(all, seqs.prefill());
        // One-token steps take the kernel (graphs replay from the second on); the 2- and 4-token
        // steps compose under the option (MLRA-4 TP1: the q_pe copies of the composition).
        for (const int batch : {1, 1, 1, 1, 1, 1, 1, 1, 2, 4, 1}) {
          const StepBatch step = seqs.decode(batch, [&](int i) {
            return int(seqs.rng()() % uint32_t(seqs.size()) + i) % seqs.size();
          });
          forward_all(all, step);
          INFO("batch " << batch);
          // bf16 activations and cache against the CPU's f32 (the release-head-shape bound);
          // against the device composition only the f32 sum order of the products and q_pe's
          // one rounding differ. An FP8 cache quantizes rows that differ by that rounding, and a
          // code flipped at a rounding boundary moves a value by up to 1/16: there the kernel
          // must stay as close to the CPU as the composition is (fp8_cross_backend_bound.h's
          // slack), and close to the composition.
          const double bound =
              fp8 ? 1.25 * rel_l2(composed.logits, cpu.logits) + 5e-3 : kReleaseDecodeBound;
          CHECK(rel_l2(fused.logits, cpu.logits) < bound);
          CHECK(rel_l2(graphed.logits, cpu.logits) < bound);
          CHECK(rel_l2(both.logits, cpu.logits) < bound);
          CHECK(rel_l2(fused.logits, composed.logits) <
                (fp8 ? kReleaseDecodeBound : kDeviceDecodeBound));
          CHECK(rel_l2(graphed.logits, fused.logits) < kDeviceDecodeBound);
        }
      }
  }
}
