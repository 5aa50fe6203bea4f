// Under the kernel option latent_uk_t 1 (the default), decode steps of 1..8 tokens run every matrix
// product on our GEMV kernels, none on cuBLAS (Backend::OpTimes::cublas_calls): the latent
// projections with the W_UK copies the CUDA backend asks for (Backend::latent_uk_layouts: w_uk_t,
// the tensor-core GEMV's layout, plus w_uk where the one-token fused kernel may run), at the
// release's per-rank shapes of every latent variant, and whole decode steps of the latent models at
// TP1 and rank-0 shards of TP2..TP8, eager and recorded into decode graphs. Under latent_uk_t 0 the
// backend asks for w_uk only and the query product over it of 2..8-token steps stays on cuBLAS, one
// call per unit, counted. Each result is checked against the CPU backend; steps of more rows than
// the GEMV takes must reach cuBLAS, so the counter is seen to count.
#include <catch2/catch.hpp>

#include <algorithm>
#include <string>

#include "gpu_decode_fixture.h"
#include "gpu_test_util.h"
#include "models/latent_attention.h"

using namespace mlra;
using namespace mlra::gputest;

namespace {

int64_t cublas_calls(Backend& b) {
  return b.take_op_times().cublas_calls;
}

struct ProjDims {
  const char* name;
  int64_t dn, dr, width, r_q, heads;
  std::vector<std::pair<int64_t, int64_t>> units;  // (head0, n_heads)
};

// latent_queries + latent_up_project over `d` at T tokens with the W_UK copies `layouts` names;
// returns (qv, o).
std::pair<std::vector<float>, std::vector<float>> run_projections(
    Backend& be, const ProjDims& d, int64_t T, Backend::LatentUkLayouts layouts,
    const std::vector<std::vector<float>>& uk, const std::vector<std::vector<float>>& uv,
    const std::vector<float>& q_nope, const std::vector<float>& cq,
    const std::vector<float>& rope_w, const std::vector<float>& z,
    const std::vector<int32_t>& pos) {
  const DType t = be.kind() == DeviceKind::kCuda ? DType::kBF16 : DType::kF32;
  std::vector<Backend::LatentUnitView> units;
  int64_t v0 = 0;
  for (size_t u = 0; u < d.units.size(); ++u) {
    const auto [h0, n] = d.units[u];
    Backend::LatentUnitView view;
    if (layouts.in_by_out) view.w_uk = make(be, {n, d.dn, d.width}, t, uk[u]);
    if (layouts.out_by_in)
      view.w_uk_t = make(be, {n, d.width, d.dn}, t, transpose_heads(uk[u], n, d.dn, d.width));
    view.w_uv = make(be, {n, d.dn, d.width}, t, uv[u]);
    view.head0 = h0, view.n_heads = n, view.v0 = v0;
    units.push_back(view);
    v0 += n;
  }
  const int64_t vw = d.width + d.dr;
  Tensor tq = make(be, {T, d.heads * d.dn}, t, q_nope), tc = make(be, {T, d.r_q}, t, cq);
  Tensor tr = make(be, {d.heads * d.dr, d.r_q}, t, rope_w), tp = make_i32(be, pos);
  Tensor tz = make(be, {T, v0 * d.width}, t, z);
  Tensor qv = be.alloc({T, v0 * vw}, t), o = be.alloc({T, d.heads * d.dn}, t);
  if (be.kind() == DeviceKind::kCuda) {
    poison(be, qv);
    poison(be, o);
  }
  be.latent_queries(as_mat(tq, d.heads * d.dn), as_mat(tc, d.r_q), as_mat(tr, d.r_q), units, d.dn,
                    d.dr, d.width, tp.as<int32_t>(), 10000.0f, as_mat(qv, v0 * vw));
  be.latent_up_project(as_mat(tz, v0 * d.width), units, d.dn, d.width, 0.5f,
                       as_mat(o, d.heads * d.dn));
  return {download(be, as_mat(qv, v0 * vw)), download(be, as_mat(o, d.heads * d.dn))};
}

}  // namespace

TEST_CASE("latent projections of 1..8 tokens make no cuBLAS call at every per-rank shape",
          "[gpu][ops][latent][no_cublas]") {
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  Backend& cpu = *backends().cpu;
  Backend& gpu = *backends().gpu;  // the defaults: latent_uk_t 1
  REQUIRE(KernelOptions{}.latent_uk_t == 1);
  auto gpu_w_uk = make_cuda_backend(0, with_option(&KernelOptions::latent_uk_t, 0));
  Backend& gpu_default = *gpu_w_uk;  // latent_uk_t 0: W_UK only
  KernelOptions cublas_only;
  cublas_only.gemv_max_rows = 0;
  auto gpu_cublas = make_cuda_backend(0, cublas_only);
  // The 2.9B configs' per-rank units (d_n 128, d_r 64; local head numbering), and the tiny
  // checkpoints' d_n 8.
  using U = std::vector<std::pair<int64_t, int64_t>>;
  const ProjDims cases[] = {
      {"MLRA-4 TP1", 128, 64, 128, 1024, 24, U{{0, 24}, {0, 24}, {0, 24}, {0, 24}}},
      {"MLRA-4 TP2", 128, 64, 128, 1024, 24, U{{0, 24}, {0, 24}}},
      {"MLRA-4 TP4", 128, 64, 128, 1024, 24, U{{0, 24}}},
      {"MLRA-4 TP8", 128, 64, 128, 1024, 12, U{{0, 12}}},
      {"MLRA-2 TP1", 128, 64, 128, 1024, 24, U{{0, 12}, {0, 12}, {12, 12}, {12, 12}}},
      {"MLRA-2 TP2", 128, 64, 128, 1024, 12, U{{0, 12}, {0, 12}}},
      {"GLA-2 TP1", 128, 64, 256, 1536, 24, U{{0, 12}, {12, 12}}},
      {"GLA-4 TP1", 128, 64, 128, 1536, 24, U{{0, 6}, {6, 6}, {12, 6}, {18, 6}}},
      {"MLA TP1", 128, 64, 512, 1536, 24, U{{0, 24}}},
      {"MLA TP8", 128, 64, 512, 1536, 3, U{{0, 3}}},
      {"TPLA TP2", 128, 64, 256, 1536, 24, U{{0, 24}}},
      {"TPLA TP8", 128, 64, 64, 1536, 24, U{{0, 24}}},
      {"TPLA 4 slices a rank", 128, 64, 64, 1536, 24, U{{0, 24}, {0, 24}, {0, 24}, {0, 24}}},
      {"tiny MLRA-4 TP1", 8, 4, 8, 48, 24, U{{0, 24}, {0, 24}, {0, 24}, {0, 24}}},
      {"tiny MLA TP4", 8, 4, 32, 64, 6, U{{0, 6}}},
  };
  for (const ProjDims& d : cases) {
    const Backend::LatentUkLayouts asked = gpu.latent_uk_layouts(int64_t(d.units.size()), d.width);
    REQUIRE(asked.out_by_in);
    const Backend::LatentUkLayouts w_uk_only =
        gpu_default.latent_uk_layouts(int64_t(d.units.size()), d.width);
    REQUIRE(w_uk_only.in_by_out);
    REQUIRE_FALSE(w_uk_only.out_by_in);  // no copy, no extra memory
    // The backend's own copies, and both (the model adds w_uk for the expanded prefill).
    const Backend::LatentUkLayouts copies[] = {asked, {true, true}};
    // Per unit the query product and the up-projection; the q_pe product once per distinct head
    // range (units over the same heads copy it: Backend::copy_rows_batched).
    const int64_t n_units = int64_t(d.units.size());
    int64_t head_ranges = 0;
    for (size_t i = 0; i < d.units.size(); ++i)
      head_ranges += std::find(d.units.begin(), d.units.begin() + int64_t(i), d.units[i]) ==
                     d.units.begin() + int64_t(i);
    for (const int64_t T : {1, 2, 3, 5, 8, 9}) {
      int64_t n_virt = 0;
      for (const auto& u : d.units) n_virt += u.second;
      const auto q_nope = rounded(random_vec(rng, size_t(T * d.heads * d.dn)), DType::kBF16);
      const auto cq = rounded(random_vec(rng, size_t(T * d.r_q)), DType::kBF16);
      const auto rope_w =
          rounded(random_vec(rng, size_t(d.heads * d.dr * d.r_q), -0.1f, 0.1f), DType::kBF16);
      const auto z = rounded(random_vec(rng, size_t(T * n_virt * d.width)), DType::kBF16);
      std::vector<int32_t> pos(static_cast<size_t>(T));
      for (auto& p : pos) p = int32_t(rng() % 30000);
      std::vector<std::vector<float>> uk, uv;
      for (const auto& u : d.units) {
        const size_t n = size_t(u.second * d.dn * d.width);
        uk.push_back(rounded(random_vec(rng, n, -0.2f, 0.2f), DType::kBF16));
        uv.push_back(rounded(random_vec(rng, n, -0.2f, 0.2f), DType::kBF16));
      }
      const auto want = run_projections(cpu, d, T, cpu.latent_uk_layouts(1, d.width), uk, uv,
                                        q_nope, cq, rope_w, z, pos);
      for (const auto& layouts : copies) {
        INFO(d.name << " tokens " << T << " w_uk " << layouts.in_by_out << " w_uk_t "
                    << layouts.out_by_in);
        cublas_calls(gpu);
        const auto got = run_projections(gpu, d, T, layouts, uk, uv, q_nope, cq, rope_w, z, pos);
        const int64_t calls = cublas_calls(gpu);
        if (T <= 8)
          CHECK(calls == 0);
        else
          CHECK(calls > 0);  // past the GEMV's rows: cuBLAS, and the counter sees it
        CHECK(rel_l2(got.first, want.first) < kBf16Tol);
        CHECK(rel_l2(got.second, want.second) < kBf16Tol);
      }
      {  // latent_uk_t 0: the query product over w_uk of 2..8 rows on cuBLAS, the rest on the GEMV
        INFO(d.name << " tokens " << T << " under latent_uk_t 0");
        cublas_calls(gpu_default);
        const auto got =
            run_projections(gpu_default, d, T, w_uk_only, uk, uv, q_nope, cq, rope_w, z, pos);
        const int64_t calls = cublas_calls(gpu_default);
        if (T == 1)
          CHECK(calls == 0);
        else if (T <= 8)
          CHECK(calls == n_units);
        else
          CHECK(calls == 2 * n_units + head_ranges);
        CHECK(rel_l2(got.first, want.first) < kBf16Tol);
        CHECK(rel_l2(got.second, want.second) < kBf16Tol);
      }
      if (T == 2) {  // gemv_max_rows 0: every product on cuBLAS, each one counted
        INFO(d.name << " under gemv_max_rows 0");
        cublas_calls(*gpu_cublas);
        const auto got =
            run_projections(*gpu_cublas, d, T, asked, uk, uv, q_nope, cq, rope_w, z, pos);
        CHECK(cublas_calls(*gpu_cublas) == 2 * n_units + head_ranges);
        CHECK(rel_l2(got.first, want.first) < kBf16Tol);
        CHECK(rel_l2(got.second, want.second) < kBf16Tol);
      }
    }
  }
}

TEST_CASE("a latent unit without the W_UK copy a composition reads is refused",
          "[gpu][ops][latent][no_cublas]") {
  for (Backend* be : {backends().cpu.get(), backends().gpu.get()}) {
    INFO(be->name());
    const DType t = be->kind() == DeviceKind::kCuda ? DType::kBF16 : DType::kF32;
    const int64_t dn = 8, dr = 4, width = 16, r_q = 16, T = 3;
    Tensor q = make(*be, {T, 2 * dn}, t, std::vector<float>(size_t(T * 2 * dn), 0.5f));
    Tensor c = make(*be, {T, r_q}, t, std::vector<float>(size_t(T * r_q), 0.5f));
    Tensor r = make(*be, {2 * dr, r_q}, t, std::vector<float>(size_t(2 * dr * r_q), 0.5f));
    Tensor pos = make_i32(*be, {0, 1, 2});
    Tensor qv = be->alloc({T, 2 * (width + dr)}, t);
    Backend::LatentUnitView none;
    none.w_uv = make(*be, {2, dn, width}, t, std::vector<float>(size_t(2 * dn * width), 0.5f));
    none.n_heads = 2;
    auto call = [&](const Backend::LatentUnitView& u) {
      be->latent_queries(as_mat(q, 2 * dn), as_mat(c, r_q), as_mat(r, r_q), {u}, dn, dr, width,
                         pos.as<int32_t>(), 10000.0f, as_mat(qv, 2 * (width + dr)));
    };
    CHECK_THROWS_WITH(call(none), Catch::Contains("W_UK"));
    Backend::LatentUnitView wrong = none;
    wrong.w_uk_t = make(*be, {1, width, dn}, t, std::vector<float>(size_t(width * dn), 0.5f));
    CHECK_THROWS_WITH(call(wrong), Catch::Contains("W_UK"));
    Tensor o = be->alloc({T, 2 * dn}, t), z = be->alloc({T, 2 * width}, t);
    Backend::LatentUnitView short_uv = wrong;
    short_uv.w_uv = wrong.w_uk_t;  // [1, width, dn]: half the heads
    CHECK_THROWS_WITH(
        be->latent_up_project(as_mat(z, 2 * width), {short_uv}, dn, width, 1.0f, as_mat(o, 2 * dn)),
        Catch::Contains("W_UV"));
  }
}

namespace {

// Prefills 8 sequences, then runs decode steps of 1, 2, 5 and 8 sequences on the CPU and on
// three GPU models: two under the defaults (latent_uk_t 1; eager, and graphs up to 8 sequences),
// where no decode step may call cuBLAS (a recorded step counts when it is recorded), and one
// eager under latent_uk_t 0, where one-sequence steps make no cuBLAS call and steps of 2..8 make
// some (the latent query product over w_uk). Every step's logits are within `bound` of the CPU's.
void check_decode_without_cublas(const ModelConfig& c, const Checkpoint& ckpt, int tp,
                                 double bound) {
  const ShardPlan plan = make_shard_plan(c, tp, 0);
  DecodeSequences seqs({8, 41, 4, 7, true}, c.vocab_size);
  const CacheOptions cache = seqs.cache();
  const KernelOptions w_uk_only = with_option(&KernelOptions::latent_uk_t, 0);
  DecodeModel cpu = cpu_model(c, plan, ckpt, cache);
  DecodeModel eager = cuda_model(c, plan, ckpt, cache, {});
  DecodeModel graphed = cuda_model(c, plan, ckpt, cache, {}, 8);
  DecodeModel without_copy = cuda_model(c, plan, ckpt, cache, w_uk_only);
  forward_all({&cpu, &eager, &graphed, &without_copy}, seqs.prefill());
  REQUIRE(rel_l2(eager.logits, cpu.logits) < bound);
  REQUIRE(rel_l2(without_copy.logits, cpu.logits) < bound);
  for (const int batch : {1, 2, 5, 8, 2, 5}) {
    const StepBatch step = seqs.decode_strided(batch, 3);
    CAPTURE(batch);
    cpu.forward(step);
    for (DecodeModel* m : {&eager, &graphed, &without_copy}) cublas_calls(*m->backend);
    forward_all({&eager, &graphed, &without_copy}, step);
    CHECK(cublas_calls(*eager.backend) == 0);
    CHECK(cublas_calls(*graphed.backend) == 0);
    if (batch == 1)
      CHECK(cublas_calls(*without_copy.backend) == 0);
    else
      CHECK(cublas_calls(*without_copy.backend) > 0);
    CHECK(rel_l2(eager.logits, cpu.logits) < bound);
    CHECK(rel_l2(graphed.logits, cpu.logits) < bound);
    CHECK(rel_l2(without_copy.logits, cpu.logits) < bound);
  }
}

}  // namespace

TEST_CASE("decode steps of 1..8 latent-model sequences make no cuBLAS call (tiny checkpoints)",
          "[gpu][model][small_batch][no_cublas]") {
  struct Case {
    const char* variant;
    int tp;
    bool tpla;
  };
  // TPLA stops at TP4 here: the tiny MLA's 32-wide latent gives 4-wide slices at TP8, whose
  // up-projection (K = 4) no GEMV takes; the release's TP8 slices are 64 wide (first test case).
  const Case cases[] = {
      {"mlra4", 1, false}, {"mlra4", 2, false},       {"mlra4", 4, false},     {"mlra4", 8, false},
      {"mla", 1, false},   {"mla", 2, false},         {"mla", 4, false},       {"mla", 8, false},
      {"gla2", 1, false},  {"gla2", 2, false},        {"gla2", 4, false},      {"gla2", 8, false},
      {"gla4", 1, false},  {"mlra2", 1, false},       {"mlra2", 2, false},     {"mla", 2, true},
      {"mla", 4, true},    {"mlra4_gated", 1, false}, {"mla_gated", 2, false},
  };
  for (const Case& k : cases) {
    INFO(k.variant << " tp " << k.tp << (k.tpla ? " tpla" : ""));
    TinyModel m = tiny_model(k.variant);
    if (k.tpla) m.config.mla_tp_mode = LatentTpMode::kTpla;
    REQUIRE(unsupported_tp_reason(m.config, k.tp).empty());
    check_decode_without_cublas(m.config, *m.ckpt, k.tp, kTinyDecodeBound);
  }
}

TEST_CASE("decode steps of 1..8 sequences at the release's head shapes make no cuBLAS call",
          "[gpu][model][small_batch][no_cublas]") {
  for (const char* v : {"mlra_4", "mla"})
    for (const int tp : {1, 2, 4}) {
      INFO(v << " tp " << tp);
      const ModelConfig c = release_head_config(v, 512);  // whole 16-byte rows per rank at TP4
      REQUIRE(unsupported_tp_reason(c, tp).empty());
      auto ckpt = make_synthetic_checkpoint(c, 77);
      check_decode_without_cublas(c, *ckpt, tp, kReleaseDecodeBound);
    }
}
