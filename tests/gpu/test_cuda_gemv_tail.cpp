// The GEMV at any K (kernels/gemv.h): rows stored at a padded ld, the K tail's x and w values past
// K read but never used. Both kernels, 1..8 rows, plain and SwiGLU, against double references,
// with NaN in every pad (x, and w where the loader would put zeros) to prove nothing past K
// reaches y. Then every per-rank weight product of every 2.9B config at TP 1/2/4/8
// (models/decode_products.h) through the backend at 1..8 rows, against the CPU: on our GEMV under
// the kernel option gemv_k_tail 1, on cuBLAS where K % 8 != 0 under 0 (the default). Fresh random
// inputs, seed reported on failure.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <map>
#include <tuple>

#include "gpu_test_util.h"
#include "kernels/gemv.h"
#include "models/decode_products.h"
#include "models/model_config.h"
#include "models/shard_plan.h"
#include "models/weight_loader.h"

using namespace mlra;
using namespace mlra::gputest;

namespace {

// rows x cols random values in [-scale, scale) (bf16-exact for bf16) at pitch ld, `pad` in
// columns cols..ld. A 64-bit xorshift seeded from rng: the 2.9B products hold ~2G weights.
std::vector<float> padded_rows(std::mt19937& rng, int64_t rows, int64_t cols, int64_t ld, float pad,
                               DType t, float scale = 1.0f) {
  uint64_t s = (uint64_t(rng()) << 32 | rng()) | 1u;
  std::vector<float> out(size_t(rows * ld), pad);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      s ^= s << 13, s ^= s >> 7, s ^= s << 17;
      const float u = float(s >> 40) * (1.0f / 16777216.0f);  // [0, 1)
      const float v = (2.0f * u - 1.0f) * scale;
      out[size_t(r * ld + c)] = t == DType::kBF16 ? round_bf16(v) : v;
    }
  return out;
}

// [rows, n] of x [rows, k] (pitch x_ld) . w^T (w [n, k], pitch w_ld) in double.
std::vector<double> product(const std::vector<float>& x, int64_t x_ld, const std::vector<float>& w,
                            int64_t w_ld, int64_t rows, int64_t n, int64_t k) {
  std::vector<double> y(size_t(rows * n));
  for (int64_t m = 0; m < rows; ++m)
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (int64_t i = 0; i < k; ++i)
        acc += double(x[size_t(m * x_ld + i)]) * double(w[size_t(j * w_ld + i)]);
      y[size_t(m * n + j)] = acc;
    }
  return y;
}

const char* kernel_name(cuda::GemvKernel k) {
  return k == cuda::GemvKernel::kFma ? "fma" : k == cuda::GemvKernel::kMma ? "mma" : "auto";
}

const int64_t kTailKs[] = {2470, 1235, 4724, 1181, 9, 17, 2472};

}  // namespace

TEST_CASE("both GEMV kernels take a K tail and never use x or w past K", "[gpu][gemv][tail]") {
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  Backend& g = gpu();
  const float nan = NAN;
  for (const int64_t k : kTailKs)
    for (const int64_t n : {int64_t(37), int64_t(3072)}) {
      // Small N: three batch entries, one after another. Rows at padded_ld(K), NaN past K in x
      // always and in w for the small N (the loader's zero pad for the large one).
      const int64_t batch = n == 37 ? 3 : 1, x_ld = padded_ld(k), w_ld = padded_ld(k);
      const int64_t x_stride = 8 * x_ld, w_stride = n * w_ld, y_ld = n + 3, y_stride = 8 * y_ld;
      const auto x = padded_rows(rng, 8 * batch, k, x_ld, nan, DType::kBF16);
      const auto w = padded_rows(rng, n * batch, k, w_ld, n == 37 ? nan : 0.0f, DType::kBF16);
      std::vector<std::vector<double>> want;
      for (int64_t b = 0; b < batch; ++b)
        want.push_back(product(std::vector<float>(x.begin() + b * x_stride, x.end()), x_ld,
                               std::vector<float>(w.begin() + b * w_stride, w.end()), w_ld, 8, n,
                               k));
      Tensor xg = make(g, {int64_t(x.size())}, DType::kBF16, x);
      Tensor wg = make(g, {int64_t(w.size())}, DType::kBF16, w);
      Tensor yg = g.alloc({batch * y_stride}, DType::kF32);
      const MatView wv{wg.data, DType::kBF16, n, k, w_ld};
      for (int64_t m = 1; m <= 8; ++m)
        for (const auto kernel : {cuda::GemvKernel::kFma, cuda::GemvKernel::kMma}) {
          INFO("k " << k << " n " << n << " m " << m << " batch " << batch << " "
                    << kernel_name(kernel));
          const MatView xv{xg.data, DType::kBF16, m, k, x_ld}, yv{yg.data, DType::kF32, m, n, y_ld};
          REQUIRE(cuda::gemv_supports(xv, x_stride, wv, w_stride, true, yv, y_stride, batch));
          REQUIRE(cuda::gemv_mma_supports(xv, x_stride, wv, w_stride, true, yv, y_stride, batch));
          poison(g, yg);
          cuda::launch_gemv(xv, x_stride, wv, w_stride, true, yv, y_stride, batch, 1.0f, 0.0f,
                            cuda_stream_of(g), kernel);
          const auto got =
              download(g, {yg.data, DType::kF32, 1, batch * y_stride, batch * y_stride});
          std::vector<float> got_out, want_out;
          int64_t touched = 0;
          for (int64_t b = 0; b < batch; ++b)
            for (int64_t r = 0; r < 8; ++r)
              for (int64_t j = 0; j < y_ld; ++j) {
                const float v = got[size_t(b * y_stride + r * y_ld + j)];
                if (r < m && j < n) {
                  got_out.push_back(v);
                  want_out.push_back(float(want[size_t(b)][size_t(r * n + j)]));
                } else if (!std::isnan(v)) {
                  ++touched;
                }
              }
          // f32 y: f32 sums (the tensor cores' adds may truncate) against double; NaN leaking
          // from a pad fails rel_l2 (non-finite) outright.
          CHECK(rel_l2(got_out, want_out) < 1e-4);
          CHECK(touched == 0);
        }
    }
}

TEST_CASE("the FMA GEMV takes a K tail of f32 x at a pitch of 4", "[gpu][gemv][tail]") {
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  Backend& g = gpu();
  for (const int64_t k : kTailKs) {
    const int64_t n = 129, x_ld = padded_ld(k, 4), w_ld = padded_ld(k), m = 5;
    const auto x = padded_rows(rng, m, k, x_ld, NAN, DType::kF32);
    const auto w = padded_rows(rng, n, k, w_ld, NAN, DType::kBF16);
    const auto want = product(x, x_ld, w, w_ld, m, n, k);
    Tensor xg = make(g, {m * x_ld}, DType::kF32, x), wg = make(g, {n * w_ld}, DType::kBF16, w);
    Tensor yg = g.alloc({m, n}, DType::kF32);
    poison(g, yg);
    const MatView xv{xg.data, DType::kF32, m, k, x_ld}, wv{wg.data, DType::kBF16, n, k, w_ld};
    INFO("k " << k);
    REQUIRE(cuda::gemv_supports(xv, 0, wv, 0, true, as_mat(yg, n), 0, 1));
    cuda::launch_gemv(xv, 0, wv, 0, true, as_mat(yg, n), 0, 1, 1.0f, 0.0f, cuda_stream_of(g),
                      cuda::GemvKernel::kFma);
    std::vector<float> want_f(want.begin(), want.end());
    CHECK(rel_l2(download(g, as_mat(yg, n)), want_f) < 2e-5);
  }
}

TEST_CASE("both SwiGLU GEMV kernels take a K tail", "[gpu][gemv][tail][fused]") {
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  Backend& g = gpu();
  for (const int64_t k : kTailKs)
    for (const int64_t f : {int64_t(37), int64_t(1000)}) {
      const int64_t ld = padded_ld(k), y_ld = f + 5;
      const auto x = padded_rows(rng, 8, k, ld, NAN, DType::kBF16);
      const auto w = padded_rows(rng, 2 * f, k, ld, NAN, DType::kBF16, 0.1f);
      const auto ab = product(x, ld, w, ld, 8, 2 * f, k);
      Tensor xg = make(g, {8 * ld}, DType::kBF16, x), wg = make(g, {2 * f * ld}, DType::kBF16, w);
      Tensor yg = g.alloc({8, y_ld}, DType::kBF16);
      const MatView w12{wg.data, DType::kBF16, 2 * f, k, ld};
      for (int64_t m = 1; m <= 8; ++m)
        for (const auto kernel : {cuda::GemvKernel::kFma, cuda::GemvKernel::kMma}) {
          INFO("k " << k << " f " << f << " m " << m << " " << kernel_name(kernel));
          const MatView xv{xg.data, DType::kBF16, m, k, ld}, yv{yg.data, DType::kBF16, m, f, y_ld};
          REQUIRE(cuda::gemv_swiglu_supports(xv, w12, yv));
          poison(g, yg);
          cuda::launch_gemv_swiglu(xv, w12, yv, cuda_stream_of(g), kernel);
          const auto got = download(g, {yg.data, DType::kBF16, 8, y_ld, y_ld});
          std::vector<float> got_out, want_out;
          int64_t touched = 0;
          for (int64_t r = 0; r < 8; ++r)
            for (int64_t j = 0; j < y_ld; ++j) {
              const float v = got[size_t(r * y_ld + j)];
              if (r < m && j < f) {
                // Each product rounded to bf16 before the silu, as the kernels do.
                const double a = round_bf16(float(ab[size_t(r * 2 * f + j)]));
                const double b = round_bf16(float(ab[size_t(r * 2 * f + f + j)]));
                got_out.push_back(v);
                want_out.push_back(float(a / (1.0 + std::exp(-a)) * b));
              } else if (!std::isnan(v)) {
                ++touched;
              }
            }
          CHECK(rel_l2(got_out, want_out) < kBf16Tol);
          CHECK(touched == 0);
        }
    }
}

namespace {

// One product to check, with the configs (variant, TP, rank) that issue it.
struct Seen {
  DecodeProduct p;
  std::string where;
};

// Every per-rank decode product of every 2.9B config at TP 1/2/4/8 (and MLA's TPLA at TP > 1),
// once per distinct shape, as the model issues them under latent_uk_t 1: every product then has
// the GEMV's out_by_in layout (under 0 the latent query product over W_UK as stored goes to
// cuBLAS at 2..8 rows).
std::vector<Seen> release_products(int& plans) {
  std::map<std::tuple<int64_t, int64_t, int64_t, bool, bool, bool>, Seen> seen;
  const auto root = std::filesystem::path(MLRA_SOURCE_DIR) / "configs/2.9b";
  plans = 0;
  KernelOptions uk_t;
  uk_t.latent_uk_t = 1;
  for (const auto& dir : std::filesystem::directory_iterator(root)) {
    const std::string v = dir.path().filename().string();
    for (const bool tpla : {false, true}) {
      ModelConfig c = load_model_config(dir.path() / "config.json", *parse_variant(v));
      if (tpla && c.variant.kind != AttentionKind::kMla) continue;
      if (tpla) c.mla_tp_mode = LatentTpMode::kTpla;
      for (const int tp : {1, 2, 4, 8}) {
        if (tpla && tp == 1) continue;
        const std::string why = unsupported_tp_reason(c, tp);
        INFO(v << " tp " << tp << ": " << why);
        REQUIRE(why.empty());  // the release configs take every TP degree of a node
        for (int r = 0; r < tp; ++r, ++plans)
          for (const DecodeProduct& p : decode_products(c, make_shard_plan(c, tp, r), uk_t)) {
            const auto key = std::make_tuple(p.n, p.k, p.batch, p.glu, p.x_shared, p.out_by_in);
            if (seen.count(key) == 0)
              seen[key] = {p, v + (tpla ? " tpla" : "") + " tp" + std::to_string(tp) + " rank " +
                                  std::to_string(r) + " " + p.name};
          }
      }
    }
  }
  std::vector<Seen> out;
  for (auto& [key, s] : seen) out.push_back(s);
  return out;
}

}  // namespace

TEST_CASE(
    "every per-rank product of the 2.9B configs at 1..8 rows: our GEMV under gemv_k_tail 1, "
    "cuBLAS for K % 8 != 0 under 0",
    "[gpu][gemv][mma][shapes][options]") {
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  // Index: the kernel option gemv_k_tail. Operands live on gpu() (uploads synchronize); each
  // backend's outputs are its own and read back (synchronized) before the next one runs.
  std::unique_ptr<Backend> by_option[2];
  for (int t = 0; t <= 1; ++t) {
    KernelOptions o;
    o.gemv_k_tail = t;
    by_option[t] = make_cuda_backend(0, o);
  }
  int plans = 0;
  const std::vector<Seen> products = release_products(plans);
  CHECK(plans >= 11 * 15);
  bool k_tail = false;  // the MLP down-projection of some TP degree has K % 8 != 0
  for (const Seen& s : products) {
    const DecodeProduct& p = s.p;
    INFO(s.where << ": " << p.batch << " x [" << p.n << ", " << p.k << "]"
                 << (p.glu ? " glu" : ""));
    REQUIRE(p.out_by_in);
    k_tail = k_tail || p.k % 8 != 0;
    // The model's layout: one operand at padded_ld(K) (pad NaN in x, zero in w as loaded), or
    // batch entries side by side.
    const int64_t w_rows = p.glu ? 2 * p.n : p.n, w_ld = padded_ld(p.k);
    const int64_t x_ld = p.batch == 1 ? padded_ld(p.k) : p.batch * p.k;
    const int64_t x_stride = p.batch == 1 || p.x_shared ? 0 : p.k, w_stride = w_rows * w_ld;
    const int64_t y_ld = p.batch * p.n, y_stride = p.n;
    const auto x = padded_rows(rng, 8, p.batch == 1 ? p.k : x_ld, x_ld, NAN, DType::kBF16);
    const auto w = padded_rows(rng, p.batch * w_rows, p.k, w_ld, 0.0f, DType::kBF16, 0.1f);
    Tensor xg = make(gpu(), {8 * x_ld}, DType::kBF16, x);
    Tensor wg = make(gpu(), {p.batch * w_stride}, DType::kBF16, w);
    Tensor xc = make(cpu(), {8 * x_ld}, DType::kF32, x);
    Tensor wc = make(cpu(), {p.batch * w_stride}, DType::kF32, w);
    const DType yt = p.glu ? DType::kBF16 : DType::kF32;  // f32: the GEMV's sums show it ran
    Tensor yc = cpu().alloc({8 * y_ld}, DType::kF32);
    const MatView wv{wg.data, DType::kBF16, w_rows, p.k, w_ld};
    const MatView wcv{wc.data, DType::kF32, w_rows, p.k, w_ld};
    if (p.glu)
      cpu().linear_swiglu({xc.data, DType::kF32, 8, p.k, x_ld}, wcv,
                          {yc.data, DType::kF32, 8, p.n, y_ld});
    else
      cpu().linear_batched({xc.data, DType::kF32, 8, p.k, x_ld}, x_stride, wcv, w_stride, true,
                           {yc.data, DType::kF32, 8, p.n, y_ld}, y_stride, p.batch, 1.0f, 0.0f);
    const auto want = download(cpu(), {yc.data, DType::kF32, 8, y_ld, y_ld});
    for (int t = 0; t <= 1; ++t)
      for (int64_t m = 1; m <= 8; ++m) {
        INFO("gemv_k_tail " << t << " m " << m);
        Backend& g = *by_option[t];
        const bool on_gemv = t == 1 || p.k % 8 == 0;  // where the backend takes our GEMV
        Tensor y_backend = g.alloc({8 * y_ld}, yt), y_direct = g.alloc({8 * y_ld}, yt);
        const MatView xv{xg.data, DType::kBF16, m, p.k, x_ld};
        const MatView yb{y_backend.data, yt, m, p.n, y_ld}, yd{y_direct.data, yt, m, p.n, y_ld};
        poison(g, y_backend);
        poison(g, y_direct);
        if (p.glu) {
          REQUIRE(cuda::gemv_swiglu_supports(xv, wv, yb));
          g.linear_swiglu(xv, wv, yb);
          cuda::launch_gemv_swiglu(xv, wv, yd, cuda_stream_of(g));
        } else {
          // What the backend's linear_batched sends to our GEMV (rows <= gemv_max_rows, default
          // 8) where on_gemv.
          REQUIRE(cuda::gemv_auto_kernel(xv, x_stride, wv, w_stride, true, yb, y_stride, p.batch) ==
                  (m == 1 ? cuda::GemvKernel::kFma : cuda::GemvKernel::kMma));
          REQUIRE(
              (m == 1 ? cuda::gemv_supports(xv, x_stride, wv, w_stride, true, yb, y_stride, p.batch)
                      : cuda::gemv_mma_supports(xv, x_stride, wv, w_stride, true, yb, y_stride,
                                                p.batch)));
          g.linear_batched(xv, x_stride, wv, w_stride, true, yb, y_stride, p.batch, 1.0f, 0.0f);
          cuda::launch_gemv(xv, x_stride, wv, w_stride, true, yd, y_stride, p.batch, 1.0f, 0.0f,
                            cuda_stream_of(g));
        }
        // Whole rows: every batch entry's outputs (y_ld = batch * N).
        const auto got = download(g, {y_backend.data, yt, m, y_ld, y_ld});
        const auto direct = download(g, {y_direct.data, yt, m, y_ld, y_ld});
        // On the GEMV the backend ran the same kernel on the same operands, bit for bit; cuBLAS
        // sums in another order, which shows in f32 y (the non-SwiGLU products).
        if (on_gemv)
          CHECK(got == direct);
        else if (!p.glu)
          CHECK(got != direct);
        const std::vector<float> want_m(want.begin(), want.begin() + m * y_ld);
        CHECK(rel_l2(got, want_m) < (p.glu ? kBf16Tol : 1e-4));
      }
  }
  CHECK(k_tail);
}
