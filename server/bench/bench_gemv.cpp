// `mlra-bench gemv`: (1) device-to-device copy bandwidth (as `mlra-bench attention` measures it);
// (2) per weight product of a decode step of a 2.9B model's rank (--variant, --tp, --rank: the
// shard plan's products, models/decode_products.h, laid out as the model stores them: rows at
// padded_ld(K); the latent query product over W_UK once per value of the kernel option
// latent_uk_t, as the model runs it under each) and row count: our two GEMV kernels (FMA and
// tensor-core) and cuBLAS (the backend's call), each recorded in a CUDA graph over enough weight
// copies to exceed L2 three times, timed with events after warm-up (median of replays, divided by
// the copies). GB/s counts weights + x + y bytes. SwiGLU rows run our fused form against cuBLAS's
// plain product of [W1; W2] (no silu_mul launch). Inputs are random bf16 (never zeros); each row
// reports the largest rel. L2 difference of our outputs from cuBLAS's. A kernel that does not take
// a shape prints "-" in its columns; no shape stops the table.
#include "server/bench/bench_gemv.h"

#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "server/bench/bench_command.h"
#include "server/bench/bench_cuda_util.h"
#ifdef MLRA_HAVE_CUDA
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "kernels/cuda_check.h"
#include "kernels/cuda_ops.h"
#include "kernels/gemv.h"
#include "kernels/kernel_options.h"
#include "models/decode_products.h"
#include "models/model_config.h"
#include "models/shard_plan.h"
#include "models/weight_loader.h"
#endif

namespace mlra {
namespace {

struct BenchOptions {
  int device = 0;
  int replays = 30;
  std::vector<int> rows = {1, 2, 4, 8};
  std::string variant = "mlra_4";
  std::vector<int> tps = {1, 2, 4, 8};
  int rank = 0;
  std::string config_dir = std::string(MLRA_SOURCE_DIR) + "/configs/2.9b";
};

#ifdef MLRA_HAVE_CUDA

// One product (DecodeProduct's conventions): batch x (y [M, N] = x [M, K] . op(w)); batched
// operands sit side by side in one row like the model's per-head slices (x [M, batch*K], y [M,
// batch*N]), weights back to back; one operand's rows at padded_ld(K). glu: y [M, N] =
// silu(x . W1^T) * (x . W2^T), w = [W1; W2] ([2N, K]).
struct Shape {
  std::string name;
  int64_t k, n, batch;
  bool out_by_in, glu, x_shared;
};

using bench::copy_bandwidth_gbs;
using bench::DeviceBuffer;
using bench::median;
using bench::time_ms;

// Records `copies` calls of fn(c) into a graph and returns the median time of one call (us).
template <class Fn>
double graph_us(cudaStream_t stream, int copies, int replays, Fn fn) {
  for (int c = 0; c < copies; ++c) fn(c);  // eager once: cuBLAS picks and loads its kernels
  MLRA_CUDA_CHECK(cudaStreamSynchronize(stream));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  MLRA_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  for (int c = 0; c < copies; ++c) fn(c);
  MLRA_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  MLRA_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  const float ms =
      time_ms(stream, replays, [&] { MLRA_CUDA_CHECK(cudaGraphLaunch(exec, stream)); });
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  return ms * 1e3 / copies;
}

std::vector<float> download_bf16(const void* p, size_t n) {
  std::vector<uint16_t> h(n);
  MLRA_CUDA_CHECK(cudaMemcpy(h.data(), p, n * 2, cudaMemcpyDeviceToHost));
  std::vector<float> f(n);
  for (size_t i = 0; i < n; ++i) {
    const uint32_t u = uint32_t(h[i]) << 16;
    std::memcpy(&f[i], &u, 4);
  }
  return f;
}

double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

// Times of kernels that do not take the shape stay negative.
struct Result {
  double fma_us = -1, mma_us = -1, cublas_us = 0, bytes = 0, diff = -1;
};

Result bench_shape(const Shape& s, int m, size_t l2_bytes, int replays, cudaStream_t stream,
                   cublasHandle_t blas) {
  const int64_t w_rows = s.glu ? 2 * s.n : s.out_by_in ? s.n : s.k;
  const int64_t w_cols = s.out_by_in ? s.k : s.n, w_ld = padded_ld(w_cols);
  const int64_t w_elems = w_rows * w_ld * s.batch;
  const size_t w_bytes = size_t(w_elems) * 2;
  const int copies = int(std::clamp<size_t>((3 * l2_bytes + w_bytes - 1) / w_bytes, 1, 1024));
  std::vector<std::unique_ptr<DeviceBuffer>> ws;
  for (int c = 0; c < copies; ++c) {
    ws.push_back(std::make_unique<DeviceBuffer>(w_bytes));
    cuda::launch_fill_random(ws.back()->p, DType::kBF16, w_elems, 101 + c, stream);
  }
  const int64_t x_ld = padded_ld(s.batch * s.k), y_ld = s.batch * s.n;
  const int64_t blas_n = s.glu ? 2 * s.n : s.n;
  DeviceBuffer x(size_t(m * x_ld) * 2), y_ours(size_t(m * y_ld) * 2);
  DeviceBuffer y_blas(size_t(m * s.batch * blas_n) * 2);
  cuda::launch_fill_random(x.p, DType::kBF16, m * x_ld, 3, stream);
  const int64_t x_stride = s.batch > 1 && !s.x_shared ? s.k : 0, w_stride = w_rows * w_ld;
  const int64_t y_stride = s.n;
  const MatView xv{x.p, DType::kBF16, m, s.k, x_ld}, yv{y_ours.p, DType::kBF16, m, s.n, y_ld};
  const float alpha = 1.0f, beta = 0.0f;
  auto ours = [&](cuda::GemvKernel kernel) {
    return graph_us(stream, copies, replays, [&](int c) {
      const MatView wv{ws[size_t(c)]->p, DType::kBF16, w_rows, w_cols, w_ld};
      if (s.glu)
        cuda::launch_gemv_swiglu(xv, wv, yv, stream, kernel);
      else
        cuda::launch_gemv(xv, x_stride, wv, w_stride, s.out_by_in, yv, y_stride, s.batch, alpha,
                          beta, stream, kernel);
    });
  };

  Result r;
  // The backend's cuBLAS call: column-major y^T [N, M] = op(w)^T [N, K] . x^T [K, M].
  r.cublas_us = graph_us(stream, copies, replays, [&](int c) {
    MLRA_CUDA_CHECK(cublasGemmStridedBatchedEx(
        blas, s.out_by_in ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, int(blas_n), m, int(s.k),
        &alpha, ws[size_t(c)]->p, CUDA_R_16BF, int(w_ld), w_stride, x.p, CUDA_R_16BF, int(x_ld),
        x_stride, &beta, y_blas.p, CUDA_R_16BF, int(s.batch * blas_n), blas_n, int(s.batch),
        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  });
  MLRA_CUDA_CHECK(cudaStreamSynchronize(stream));  // cuBLAS's output: the last copy's product
  std::vector<float> want = download_bf16(y_blas.p, size_t(m * s.batch * blas_n));
  if (s.glu) {  // silu(a) * b of cuBLAS's two halves, for the difference only
    std::vector<float> glu(size_t(m * s.n));
    for (int64_t i = 0; i < m; ++i)
      for (int64_t n = 0; n < s.n; ++n) {
        const float a = want[size_t(i * 2 * s.n + n)], b = want[size_t(i * 2 * s.n + s.n + n)];
        glu[size_t(i * s.n + n)] = a / (1.0f + std::exp(-a)) * b;
      }
    want = glu;
  }
  const MatView w_check{ws.front()->p, DType::kBF16, w_rows, w_cols, w_ld};
  const bool fma = s.glu ? cuda::gemv_swiglu_supports(xv, w_check, yv)
                         : cuda::gemv_supports(xv, x_stride, w_check, w_stride, s.out_by_in, yv,
                                               y_stride, s.batch);
  const bool mma =
      fma && s.out_by_in &&
      cuda::gemv_mma_supports(xv, x_stride, w_check, w_stride, true, yv, y_stride, s.batch);
  if (fma) {
    r.fma_us = ours(cuda::GemvKernel::kFma);
    MLRA_CUDA_CHECK(cudaStreamSynchronize(stream));
    r.diff = rel_diff(download_bf16(y_ours.p, size_t(m * y_ld)), want);
  }
  if (mma) {
    r.mma_us = ours(cuda::GemvKernel::kMma);
    MLRA_CUDA_CHECK(cudaStreamSynchronize(stream));
    r.diff = std::max(r.diff, rel_diff(download_bf16(y_ours.p, size_t(m * y_ld)), want));
  }
  r.bytes = double(w_bytes) + double(m) * (x_ld + y_ld) * 2.0;
  return r;
}

// The chosen rank's decode products of the model at each TP degree it takes (the LM head on
// rank 0 only), in the order the forward issues them. A product that depends on a kernel option
// (the latent query product over W_UK: "w_uk" under latent_uk_t 0, "w_uk_t" under 1) is listed
// once per value, labelled with it.
std::vector<Shape> model_shapes(const BenchOptions& o) {
  const ModelConfig c = load_model_config(
      std::filesystem::path(o.config_dir) / o.variant / "config.json", *parse_variant(o.variant));
  KernelOptions uk_t;
  uk_t.latent_uk_t = 1;
  const auto same = [](const DecodeProduct& a, const DecodeProduct& b) {
    return a.name == b.name && a.n == b.n && a.k == b.k && a.batch == b.batch &&
           a.out_by_in == b.out_by_in;
  };
  std::vector<Shape> shapes;
  for (int tp : o.tps) {
    if (!unsupported_tp_reason(c, tp).empty() || o.rank < 0 || o.rank >= tp) {
      std::printf(
          "(tp%d: not run: %s)\n", tp,
          o.rank >= 0 && o.rank < tp ? unsupported_tp_reason(c, tp).c_str() : "no such rank");
      continue;
    }
    const ShardPlan plan = make_shard_plan(c, tp, o.rank);
    const std::vector<DecodeProduct> by_default = decode_products(c, plan),
                                     with_copy = decode_products(c, plan, uk_t);
    // Labelled with the option value when the other value's list lacks it.
    const auto add = [&](const DecodeProduct& p, const std::vector<DecodeProduct>& other,
                         const char* label) {
      const bool both = std::any_of(other.begin(), other.end(),
                                    [&](const DecodeProduct& q) { return same(p, q); });
      shapes.push_back(
          {"tp" + std::to_string(tp) + " " + p.name + (p.glu ? " glu" : "") + (both ? "" : label),
           p.k, p.n, p.batch, p.out_by_in, p.glu, p.x_shared});
    };
    for (const DecodeProduct& p : by_default) {
      add(p, with_copy, " [uk_t 0]");
      if (p.name != "w_uk") continue;
      for (const DecodeProduct& q : with_copy)  // the copy's product, beside the one it replaces
        if (q.name == "w_uk_t" && q.n == p.n && q.k == p.k && q.batch == p.batch)
          add(q, by_default, " [uk_t 1]");
    }
  }
  return shapes;
}

int run_bench(const BenchOptions& o) {
  MLRA_CUDA_CHECK(cudaSetDevice(o.device));
  cudaDeviceProp prop{};
  MLRA_CUDA_CHECK(cudaGetDeviceProperties(&prop, o.device));
  cudaStream_t stream;
  MLRA_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cublasHandle_t blas;
  MLRA_CUDA_CHECK(cublasCreate(&blas));
  MLRA_CUDA_CHECK(cublasSetStream(blas, stream));
  // An explicit workspace, as in the backend: cuBLAS must not allocate while a graph records.
  const size_t workspace_bytes = size_t(32) << 20;
  DeviceBuffer workspace(workspace_bytes);
  MLRA_CUDA_CHECK(cublasSetWorkspace(blas, workspace.p, workspace_bytes));
  const double copy_gbs = copy_bandwidth_gbs(stream);
  std::printf("device: %s, %d SMs, L2 %.0f MB\n", prop.name, prop.multiProcessorCount,
              prop.l2CacheSize / 1e6);
  std::printf("device-to-device copy bandwidth (1 GiB, read + write): %.0f GB/s\n", copy_gbs);
  std::printf(
      "bf16 x, w, y; alpha 1, beta 0; per-call time of a graph over L2-exceeding weight "
      "copies; %%: of the copy bandwidth; best/cub: cuBLAS time over our faster kernel's\n\n");

  const std::vector<Shape> shapes = model_shapes(o);
  std::printf(
      "[uk_t N]: the product the model runs under the kernel option latent_uk_t N only (w_uk: "
      "W_UK as stored, [dn, width] per head; w_uk_t: its [width, dn] copy)\n");
  std::printf("%-22s %-20s %2s %8s %8s %9s %6s %6s %6s %8s %8s\n", "product",
              "batch x K x N (layout)", "M", "fma_us", "mma_us", "cublas_us", "%fma", "%mma",
              "%cubl", "best/cub", "rel_diff");
  for (int m : o.rows)
    for (const Shape& s : shapes) {
      if (m < 1 || m > cuda::kGemvMaxRows) continue;
      Result r;
      try {
        r = bench_shape(s, m, size_t(prop.l2CacheSize), o.replays, stream, blas);
      } catch (const std::exception& e) {  // the table goes on; this row says why it has none
        std::printf("%-22s %lldx%lldx%lld %2d  - (%s)\n", s.name.c_str(), (long long)s.batch,
                    (long long)s.k, (long long)s.n, m, e.what());
        continue;
      }
      const auto pct = [&](double us) { return 100.0 * r.bytes / (us * 1e-6) / 1e9 / copy_gbs; };
      const double best = r.mma_us > 0 ? std::min(r.fma_us, r.mma_us) : r.fma_us;
      // A value where the kernel ran, else "-".
      const auto col = [](bool ran, double v, const char* fmt) {
        char b[24] = "-";
        if (ran) std::snprintf(b, sizeof b, fmt, v);
        return std::string(b);
      };
      const bool fma = r.fma_us > 0, mma = r.mma_us > 0;
      char name[64];
      std::snprintf(name, sizeof name, "%lldx%lldx%lld (%s)", (long long)s.batch, (long long)s.k,
                    (long long)s.n,
                    s.glu         ? "glu"
                    : s.out_by_in ? "n,k"
                                  : "k,n");
      std::printf("%-22s %-20s %2d %8s %8s %9.2f %6s %6s %6.1f %8s %8s\n", s.name.c_str(), name, m,
                  col(fma, r.fma_us, "%.2f").c_str(), col(mma, r.mma_us, "%.2f").c_str(),
                  r.cublas_us, col(fma, pct(r.fma_us), "%.1f").c_str(),
                  col(mma, pct(r.mma_us), "%.1f").c_str(), pct(r.cublas_us),
                  col(fma, r.cublas_us / best, "%.2fx").c_str(), col(fma, r.diff, "%.1e").c_str());
      std::fflush(stdout);
    }
  cublasDestroy(blas);
  MLRA_CUDA_CHECK(cudaStreamDestroy(stream));
  return 0;
}

#else

int run_bench(const BenchOptions&) {
  return bench::built_without_cuda("gemv");
}

#endif

}  // namespace

void register_bench_gemv(CLI::App& app, int& exit_code) {
  auto opts = std::make_shared<BenchOptions>();
  CLI::App* sub = app.add_subcommand("gemv", "small-M linear (decode GEMV) vs cuBLAS benchmark");
  sub->add_option("--device", opts->device, "CUDA device ordinal");
  sub->add_option("--replays", opts->replays, "timed graph replays per configuration");
  sub->add_option("--rows", opts->rows, "row counts M (1..8), e.g. decode batch sizes");
  sub->add_option("--variant", opts->variant, "2.9B config whose rank-0 products run");
  sub->add_option("--tp", opts->tps, "TP degrees of the products");
  sub->add_option("--rank", opts->rank, "the rank whose products run (0: with the LM head)");
  sub->add_option("--config-dir", opts->config_dir, "folder of 2.9B configs");
  bench::on_run(sub, exit_code, [opts] { return run_bench(*opts); });
}

}  // namespace mlra
