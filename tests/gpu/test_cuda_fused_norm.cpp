// RMSNorm fused into the GEMV's prologue (Backend::linear_normed / linear_swiglu_normed under the
// gemv_fused_norm kernel option, kernels/gemv.h launch_gemv_norm): against a double-precision
// reference on random inputs (ragged sizes and the 2.9B per-rank shapes at TP1 and TP4), and bit
// for bit against the composed norm + GEMV on the same GPU, which it claims to reproduce; the
// residual write-back (once per launch, across launches and graph replays); the fallbacks.
#include <catch2/catch.hpp>

#include <cmath>

#include "gpu_test_util.h"
#include "kernels/gemv.h"

using namespace mlra;
using namespace mlra::gputest;

namespace {

std::unique_ptr<Backend> fused_backend(int bits = 3) {
  KernelOptions o;
  o.gemv_fused_norm = bits;
  return make_cuda_backend(0, o);
}

struct Case {
  int64_t n, k;   // product outputs (F for SwiGLU) and K
  bool swiglu;    // linear_swiglu_normed over [W1; W2]
  bool residual;  // acc f32 += delta bf16 (add_rms_norm); else acc alone
  bool acc_bf16;  // without residual: acc is a bf16 column slice of a wider row (the q norm)
  float scale;
};

struct Host {
  std::vector<float> acc, delta, wn, w;  // acc: [1, acc_ld] row; w [rows, k]
  int64_t acc_ld;
};

Host make_inputs(const Case& c, std::mt19937& rng) {
  Host h;
  h.acc_ld = c.acc_bf16 ? c.k + 72 : c.k + 8;  // padding past K must stay untouched
  h.acc = rounded(random_vec(rng, size_t(h.acc_ld), -3.0f, 3.0f),
                  c.acc_bf16 ? DType::kBF16 : DType::kF32);
  h.delta = rounded(random_vec(rng, size_t(c.k)), DType::kBF16);
  h.wn = rounded(random_vec(rng, size_t(c.k), 0.5f, 1.5f), DType::kBF16);
  const int64_t rows = c.swiglu ? 2 * c.n : c.n;
  h.w = rounded(random_vec(rng, size_t(rows * c.k), -0.1f, 0.1f), DType::kBF16);
  return h;
}

struct Result {
  std::vector<float> y, normed, acc;  // acc: the whole padded row afterwards
};

// One linear_normed / linear_swiglu_normed on backend b (repeat times in a row on the same acc).
Result run(Backend& b, const Case& c, const Host& h, int repeat = 1) {
  const DType acc_t = c.acc_bf16 ? DType::kBF16 : DType::kF32;
  Tensor acc = make(b, {1, h.acc_ld}, acc_t, h.acc);
  Tensor delta = make(b, {1, c.k + 16}, DType::kBF16, [&] {
    std::vector<float> v(h.delta);
    v.resize(size_t(c.k + 16), 0.0f);
    return v;
  }());
  Tensor wn = make(b, {c.k}, DType::kBF16, h.wn);
  const int64_t rows = c.swiglu ? 2 * c.n : c.n;
  Tensor w = make(b, {rows, c.k}, DType::kBF16, h.w);
  Tensor normed = b.alloc({1, c.k}, DType::kBF16), y = b.alloc({1, c.n}, DType::kBF16);
  poison(b, normed);
  poison(b, y);
  Backend::NormedInput in{as_mat(acc, h.acc_ld).cols_slice(0, c.k),
                          c.residual ? as_mat(delta, c.k + 16).cols_slice(0, c.k) : MatView{},
                          as_mat(normed, c.k),
                          &wn,
                          1e-5f,
                          c.scale};
  for (int r = 0; r < repeat; ++r) {
    if (c.swiglu)
      b.linear_swiglu_normed(in, as_mat(w, c.k), as_mat(y, c.n));
    else
      b.linear_normed(in, as_mat(w, c.k), as_mat(y, c.n));
  }
  return {download(b, as_mat(y, c.n)), download(b, as_mat(normed, c.k)),
          download(b, as_mat(acc, h.acc_ld))};
}

// The residual row after `repeat` adds, in f32 as the device adds.
std::vector<float> acc_after(const Case& c, const Host& h, int repeat) {
  std::vector<float> a = h.acc;
  if (c.residual)
    for (int r = 0; r < repeat; ++r)
      for (int64_t i = 0; i < c.k; ++i) a[size_t(i)] += h.delta[size_t(i)];
  return a;
}

// Double reference of the normed input (of the final acc) and the product.
void reference(const Case& c, const Host& h, const std::vector<float>& acc, std::vector<float>& x,
               std::vector<float>& y) {
  double ss = 0.0;
  for (int64_t i = 0; i < c.k; ++i) ss += double(acc[size_t(i)]) * acc[size_t(i)];
  const double inv = 1.0 / std::sqrt(ss / double(c.k) + 1e-5);
  std::vector<double> xd(size_t(c.k));
  x.assign(size_t(c.k), 0.0f);
  for (int64_t i = 0; i < c.k; ++i) {
    xd[size_t(i)] = double(h.wn[size_t(i)]) * acc[size_t(i)] * inv * c.scale;
    x[size_t(i)] = float(xd[size_t(i)]);
  }
  auto dot = [&](int64_t row) {
    double s = 0.0;
    for (int64_t i = 0; i < c.k; ++i) s += double(h.w[size_t(row * c.k + i)]) * xd[size_t(i)];
    return s;
  };
  y.assign(size_t(c.n), 0.0f);
  for (int64_t o = 0; o < c.n; ++o) {
    if (!c.swiglu) {
      y[size_t(o)] = float(dot(o));
      continue;
    }
    const double a = dot(o), g = dot(c.n + o);
    y[size_t(o)] = float(a / (1.0 + std::exp(-a)) * g);
  }
}

void check_case(const Case& c, Backend& fused, std::mt19937& rng) {
  INFO("n " << c.n << " k " << c.k << " swiglu " << c.swiglu << " residual " << c.residual
            << " acc_bf16 " << c.acc_bf16);
  const Host h = make_inputs(c, rng);
  const uint64_t before = cuda::gemv_norm_launches();
  const Result got = run(fused, c, h);
  CHECK(cuda::gemv_norm_launches() == before + 1);  // the fused kernel ran, not the composition
  const Result composed = run(*backends().gpu, c, h);
  CHECK(cuda::gemv_norm_launches() == before + 1);  // the default options compose
  CHECK(all_finite(got.y));
  std::vector<float> x_ref, y_ref;
  const std::vector<float> acc = acc_after(c, h, 1);
  reference(c, h, acc, x_ref, y_ref);
  CHECK(rel_l2(got.normed, x_ref) < kBf16Tol);
  CHECK(rel_l2(got.y, y_ref) < kBf16Tol);
  CHECK(got.acc == acc);  // the sum written back once, the padding untouched
  // The same bits as rms_norm / add_rms_norm followed by the GEMV.
  CHECK(got.normed == composed.normed);
  CHECK(got.y == composed.y);
  CHECK(composed.acc == acc);
}

}  // namespace

TEST_CASE("fused norm GEMV matches a double reference and the composed ops bit for bit",
          "[gpu][gemv][fused_norm]") {
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  const auto fused = fused_backend();
  const float q_mlra = std::sqrt(3072.0f / 1024.0f), q_mla = std::sqrt(3072.0f / 1536.0f);
  const Case cases[] = {
      // Ragged sizes around the kernel's row groups and its 8-wide chunks; K at the limit.
      {1, 8, false, true, false, 1.0f},
      {37, 40, false, true, false, 1.0f},
      {37, 40, true, true, false, 1.0f},
      {100, 1032, false, false, true, 1.3f},
      {5, 1032, true, false, false, 1.0f},
      {64, 6016, false, true, false, 1.0f},
      // 2.9B per rank (configs/2.9b), TP1 and TP4. Layer norm into [W_qa; W_kv]: MLRA-4 and MLA,
      // the first layer (embeddings, no residual add) too.
      {1600, 3072, false, true, false, 1.0f},
      {1216, 3072, false, true, false, 1.0f},
      {2112, 3072, false, true, false, 1.0f},
      {1600, 3072, false, false, false, 1.0f},
      // The q norm into W_qb_nope (c_q a bf16 slice of the x projection, scaled).
      {3072, 1024, false, false, true, q_mlra},
      {768, 1024, false, false, true, q_mlra},
      {3072, 1536, false, false, true, q_mla},
      {768, 1536, false, false, true, q_mla},
      // The MLP norm into the SwiGLU GEMV.
      {9880, 3072, true, true, false, 1.0f},
      {2470, 3072, true, true, false, 1.0f},
      {9448, 3072, true, true, false, 1.0f},
      {2362, 3072, true, true, false, 1.0f},
  };
  for (const Case& c : cases) check_case(c, *fused, rng);
}

TEST_CASE("fused norm GEMV writes the residual once per launch, eagerly and replayed",
          "[gpu][gemv][fused_norm]") {
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  const auto fused = fused_backend();
  for (const Case c :
       {Case{1600, 3072, false, true, false, 1.0f}, Case{2470, 3072, true, true, false, 1.0f}}) {
    INFO("n " << c.n << " swiglu " << c.swiglu);
    const Host h = make_inputs(c, rng);
    // Three launches in a row: the arrival counter is back at zero after each one, or a later
    // launch would find no last block and leave acc as it was.
    const Result got = run(*fused, c, h, 3);
    const Result composed = run(*backends().gpu, c, h, 3);
    CHECK(got.acc == acc_after(c, h, 3));
    CHECK(got.y == composed.y);
    CHECK(got.normed == composed.normed);

    // Recorded once, replayed twice: two adds, the product of the second sum.
    Backend& b = *fused;
    Tensor acc = make(b, {1, h.acc_ld}, DType::kF32, h.acc);
    Tensor delta = make(b, {1, c.k}, DType::kBF16, h.delta),
           wn = make(b, {c.k}, DType::kBF16, h.wn);
    Tensor w = make(b, {c.swiglu ? 2 * c.n : c.n, c.k}, DType::kBF16, h.w);
    Tensor normed = b.alloc({1, c.k}, DType::kBF16), y = b.alloc({1, c.n}, DType::kBF16);
    const Backend::NormedInput in{as_mat(acc, h.acc_ld).cols_slice(0, c.k),
                                  as_mat(delta, c.k),
                                  as_mat(normed, c.k),
                                  &wn,
                                  1e-5f,
                                  1.0f};
    b.synchronize();
    b.begin_capture();
    if (c.swiglu)
      b.linear_swiglu_normed(in, as_mat(w, c.k), as_mat(y, c.n));
    else
      b.linear_normed(in, as_mat(w, c.k), as_mat(y, c.n));
    auto graph = b.end_capture();
    graph->replay();
    graph->replay();
    CHECK(download(b, as_mat(acc, h.acc_ld)) == acc_after(c, h, 2));
    const Result twice = run(*backends().gpu, c, h, 2);
    CHECK(download(b, as_mat(y, c.n)) == twice.y);
    CHECK(download(b, as_mat(normed, c.k)) == twice.normed);
  }
}

TEST_CASE("fused norm: what the kernel refuses runs composed and still matches the CPU",
          "[gpu][gemv][fused_norm]") {
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  const auto fused = fused_backend();
  Backend& cpu = *backends().cpu;
  struct Shape {
    int64_t m, n, k;
  };
  // Two rows (the one-row kernel only), K % 8 != 0, K past the prologue's shared memory.
  for (const Shape s : {Shape{2, 64, 256}, Shape{1, 64, 250}, Shape{1, 32, 6024}}) {
    INFO("m " << s.m << " n " << s.n << " k " << s.k);
    const auto acc = random_vec(rng, size_t(s.m * s.k), -3.0f, 3.0f);
    const auto delta = rounded(random_vec(rng, size_t(s.m * s.k)), DType::kBF16);
    const auto wn = rounded(random_vec(rng, size_t(s.k), 0.5f, 1.5f), DType::kBF16);
    const auto w = rounded(random_vec(rng, size_t(s.n * s.k), -0.1f, 0.1f), DType::kBF16);
    auto go = [&](Backend& b) {
      const DType t = b.kind() == DeviceKind::kCuda ? DType::kBF16 : DType::kF32;
      Tensor a = make(b, {s.m, s.k}, DType::kF32, acc), d = make(b, {s.m, s.k}, t, delta);
      Tensor wt = make(b, {s.n, s.k}, t, w), wnt = make(b, {s.k}, t, wn);
      Tensor h = b.alloc({s.m, s.k}, t), y = b.alloc({s.m, s.n}, t);
      b.linear_normed({as_mat(a, s.k), as_mat(d, s.k), as_mat(h, s.k), &wnt, 1e-5f, 1.0f},
                      as_mat(wt, s.k), as_mat(y, s.n));
      return std::make_pair(download(b, as_mat(y, s.n)), download(b, as_mat(a, s.k)));
    };
    const uint64_t before = cuda::gemv_norm_launches();
    const auto [y, a] = go(*fused);
    CHECK(cuda::gemv_norm_launches() == before);
    const auto [y_cpu, a_cpu] = go(cpu);
    CHECK(rel_l2(y, y_cpu) < kBf16Tol);
    CHECK(rel_l2(a, a_cpu) < 1e-6);
  }
  // Each bit of the option fuses its own product only.
  for (const int bits : {1, 2}) {
    INFO("gemv_fused_norm " << bits);
    const auto one = fused_backend(bits);
    for (const bool swiglu : {false, true}) {
      const Case c{64, 256, swiglu, true, false, 1.0f};
      const Host h = make_inputs(c, rng);
      const uint64_t before = cuda::gemv_norm_launches();
      const Result got = run(*one, c, h);
      CHECK(cuda::gemv_norm_launches() - before == (bits == (swiglu ? 2 : 1) ? 1u : 0u));
      CHECK(got.y == run(*backends().gpu, c, h).y);
    }
  }
  // The kernel's own refusals.
  const MatView acc{reinterpret_cast<void*>(256), DType::kF32, 1, 3072, 3072};
  const MatView delta{reinterpret_cast<void*>(512), DType::kBF16, 1, 3072, 3072};
  const MatView normed{reinterpret_cast<void*>(1024), DType::kBF16, 1, 3072, 3072};
  const MatView w{reinterpret_cast<void*>(4096), DType::kBF16, 64, 3072, 3072};
  const MatView y{reinterpret_cast<void*>(8192), DType::kBF16, 1, 64, 64};
  unsigned* counter = reinterpret_cast<unsigned*>(16);
  const cuda::GemvNormInput ok{acc,   delta, normed, reinterpret_cast<void*>(2048),
                               1e-5f, 1.0f,  counter};
  CHECK(cuda::gemv_norm_supports(ok, w, y, false));
  cuda::GemvNormInput bad = ok;
  bad.arrivals = nullptr;  // a residual add needs the counter
  CHECK_FALSE(cuda::gemv_norm_supports(bad, w, y, false));
  bad = ok;
  bad.acc.dtype = DType::kBF16;  // the residual is f32
  CHECK_FALSE(cuda::gemv_norm_supports(bad, w, y, false));
  bad = ok;
  bad.acc.data = reinterpret_cast<void*>(260);  // 16-byte loads
  CHECK_FALSE(cuda::gemv_norm_supports(bad, w, y, false));
  bad = ok;
  bad.normed.dtype = DType::kF32;
  CHECK_FALSE(cuda::gemv_norm_supports(bad, w, y, false));
  const MatView y_f32{y.data, DType::kF32, 1, 64, 64};
  CHECK_FALSE(cuda::gemv_norm_supports(ok, w, y_f32, false));
  CHECK_FALSE(cuda::gemv_norm_supports(ok, w, y, true));  // [W1; W2] gives 32 outputs, not 64
}
