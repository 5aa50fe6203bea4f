// `mlra-bench gemv`: (1) device-to-device copy bandwidth (as `mlra-bench attention` measures it);
// (2) per shape and row count: our GEMV and cuBLAS (the backend's call) each recorded in a CUDA
// graph over enough weight copies to exceed L2 three times, timed with events after warm-up
// (median of replays, divided by the copies). GB/s counts weights + x + y bytes. Inputs are random
// bf16 (never zeros); each shape also reports the rel. L2 difference of the two outputs.
#include "server/bench/bench_gemv.h"

#include <cstdio>
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

#include "kernels/cuda_check.h"
#include "kernels/cuda_ops.h"
#include "kernels/gemv.h"
#endif

namespace mlra {
namespace {

struct BenchOptions {
  int device = 0;
  int replays = 30;
  std::vector<int> rows = {1, 2, 4, 8};
};

#ifdef MLRA_HAVE_CUDA

// One product: batch x (y [M, N] = x [M, K] . op(w)); batched operands sit side by side in one
// row like the model's per-head slices (x [M, batch*K], y [M, batch*N]), weights back to back.
struct Shape {
  int64_t k, n, batch;
  bool out_by_in;
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

struct Result {
  double ours_us = 0, cublas_us = 0, bytes = 0, diff = 0;
};

Result bench_shape(const Shape& s, int m, size_t l2_bytes, int replays, cudaStream_t stream,
                   cublasHandle_t blas) {
  const int64_t w_elems = s.k * s.n * s.batch;
  const size_t w_bytes = size_t(w_elems) * 2;
  const int copies = int(std::clamp<size_t>((3 * l2_bytes + w_bytes - 1) / w_bytes, 1, 1024));
  std::vector<std::unique_ptr<DeviceBuffer>> ws;
  for (int c = 0; c < copies; ++c) {
    ws.push_back(std::make_unique<DeviceBuffer>(w_bytes));
    cuda::launch_fill_random(ws.back()->p, DType::kBF16, w_elems, 101 + c, stream);
  }
  const int64_t x_ld = s.batch * s.k, y_ld = s.batch * s.n;
  DeviceBuffer x(size_t(m * x_ld) * 2), y_ours(size_t(m * y_ld) * 2), y_blas(size_t(m * y_ld) * 2);
  cuda::launch_fill_random(x.p, DType::kBF16, m * x_ld, 3, stream);
  const int64_t w_rows = s.out_by_in ? s.n : s.k, w_cols = s.out_by_in ? s.k : s.n;
  const int64_t x_stride = s.batch > 1 ? s.k : 0, w_stride = s.k * s.n, y_stride = s.n;
  const MatView xv{x.p, DType::kBF16, m, s.k, x_ld}, yv{y_ours.p, DType::kBF16, m, s.n, y_ld};
  const float alpha = 1.0f, beta = 0.0f;

  Result r;
  r.ours_us = graph_us(stream, copies, replays, [&](int c) {
    const MatView wv{ws[size_t(c)]->p, DType::kBF16, w_rows, w_cols, w_cols};
    cuda::launch_gemv(xv, x_stride, wv, w_stride, s.out_by_in, yv, y_stride, s.batch, alpha, beta,
                      stream);
  });
  // The backend's cuBLAS call: column-major y^T [N, M] = op(w)^T [N, K] . x^T [K, M].
  r.cublas_us = graph_us(stream, copies, replays, [&](int c) {
    MLRA_CUDA_CHECK(cublasGemmStridedBatchedEx(
        blas, s.out_by_in ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, int(s.n), m, int(s.k), &alpha,
        ws[size_t(c)]->p, CUDA_R_16BF, int(w_cols), w_stride, x.p, CUDA_R_16BF, int(x_ld), x_stride,
        &beta, y_blas.p, CUDA_R_16BF, int(y_ld), y_stride, int(s.batch), CUBLAS_COMPUTE_32F,
        CUBLAS_GEMM_DEFAULT));
  });
  MLRA_CUDA_CHECK(cudaStreamSynchronize(stream));  // both outputs hold the last copy's product
  const std::vector<float> blas_out = download_bf16(y_blas.p, size_t(m * y_ld));
  r.diff = rel_diff(download_bf16(y_ours.p, size_t(m * y_ld)), blas_out);
  r.bytes = double(w_bytes) + double(m) * (x_ld + y_ld) * 2.0;
  return r;
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
      "copies\n\n");

  const std::vector<Shape> shapes = {
      {3072, 9880, 1, true},  {9880, 3072, 1, true}, {3072, 3072, 1, true},
      {3072, 1024, 1, true},  {1024, 3072, 1, true}, {3072, 576, 1, true},
      {3072, 50304, 1, true}, {128, 128, 24, true},  {128, 128, 24, false}};
  std::printf("%-22s %4s %9s %10s %8s %9s %7s %10s %7s %9s\n", "batch x K x N (layout)", "M",
              "ours_us", "cublas_us", "speedup", "ours_GB/s", "%copy", "cublas_GB/s", "%copy",
              "rel_diff");
  for (int m : o.rows)
    for (const Shape& s : shapes) {
      if (m < 1 || m > cuda::kGemvMaxRows) continue;
      const Result r = bench_shape(s, m, size_t(prop.l2CacheSize), o.replays, stream, blas);
      const double ours_gbs = r.bytes / (r.ours_us * 1e-6) / 1e9;
      const double blas_gbs = r.bytes / (r.cublas_us * 1e-6) / 1e9;
      char name[64];
      std::snprintf(name, sizeof name, "%lldx%lldx%lld (%s)", (long long)s.batch, (long long)s.k,
                    (long long)s.n, s.out_by_in ? "n,k" : "k,n");
      std::printf("%-22s %4d %9.2f %10.2f %7.2fx %9.0f %6.1f%% %10.0f %6.1f%% %9.1e\n", name, m,
                  r.ours_us, r.cublas_us, r.cublas_us / r.ours_us, ours_gbs,
                  100.0 * ours_gbs / copy_gbs, blas_gbs, 100.0 * blas_gbs / copy_gbs, r.diff);
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
  bench::on_run(sub, exit_code, [opts] { return run_bench(*opts); });
}

}  // namespace mlra
