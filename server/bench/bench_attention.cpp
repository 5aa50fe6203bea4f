// `mlra-bench attention`: (1) device-to-device copy bandwidth (cudaMemcpy of >= 1 GB, bytes read
// + written, median of many); (2) per variant, context and batch: one split-KV plan, then a CUDA
// graph of attention+merge runs rotating over enough cache copies to exceed L2, timed with events
// after warm-up (median of replays); achieved GB/s counts the cache bytes the kernel must read.
// Inputs are random bf16 (never zeros); page tables are shuffled so pages are not contiguous.
// Each configuration runs with the bf16 cache and with the FP8 cache (kv_cache_dtype fp8_e4m3:
// the same random values quantized by the cache write), whose bytes per token are fewer. Each
// --kernels object (kernel options) runs every configuration in turn, rows k0, k1, ... side by
// side, so options compare in one run on one warm device.
#include "server/bench/bench_attention.h"

#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "server/bench/bench_command.h"
#include "server/bench/bench_cuda_util.h"
#ifdef MLRA_HAVE_CUDA
#include <cuda_runtime.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <random>
#include <tuple>

#include "kernels/cuda_check.h"
#include "kernels/cuda_ops.h"
#include "kernels/paged_attention_cuda.h"
#endif

namespace mlra {
namespace {

struct BenchOptions {
  int device = 0;
  double max_cache_gb = 5.0;
  int replays = 30;
  std::vector<int> contexts_k = {16, 64, 128, 256, 512, 1024};
  std::vector<int> batches = {1, 4, 16, 64};
  int page_size = 64;
  std::vector<std::string> variants;  // empty: all
  std::vector<std::string> kernels;   // --kernels: "kernels" config objects, one row each
  std::vector<std::string> kv_cache_dtypes = {"auto", "fp8_e4m3"};
};

#ifdef MLRA_HAVE_CUDA

// One benchmark variant at its per-rank shape.
struct Variant {
  std::string name;
  int heads;
  int a_dim;  // latent width (latent) or head dim (K/V)
  int r_dim;  // rope dims (latent) or 0
  bool latent;
  int kv_heads = 1;  // K/V variants: the row holds K of every KV head, then V (models' layout)
  int64_t row_width() const { return latent ? a_dim + r_dim : 2 * kv_heads * a_dim; }
  // The FP8 layout the models use: one group per latent or per K / V head, k_pe as the tail.
  Fp8CacheLayout fp8() const {
    return latent ? Fp8CacheLayout{1, a_dim, r_dim} : Fp8CacheLayout{2 * kv_heads, a_dim, 0};
  }
  int64_t row_bytes(bool fp8_cache) const {
    return fp8_cache ? fp8().row_bytes() : 2 * row_width();
  }
};

using bench::copy_bandwidth_gbs;
using bench::DeviceBuffer;
using bench::median;
using bench::time_ms;

struct Result {
  double us = 0;
  double gbs = 0;
  std::string path;
};

// Random values in every row of an FP8 cache: bf16 rows quantized by the cache write, in chunks.
void fill_fp8_cache(const PagedCacheView& cache, uint64_t seed, cudaStream_t stream) {
  const int64_t rows = cache.num_pages * cache.page_size, chunk = std::min<int64_t>(rows, 1 << 16);
  DeviceBuffer src(size_t(chunk) * cache.row_width * 2), slots(size_t(chunk) * 4);
  std::vector<int32_t> ids(static_cast<size_t>(chunk));
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t n = std::min(chunk, rows - r0);
    std::iota(ids.begin(), ids.end(), int32_t(r0));
    MLRA_CUDA_CHECK(
        cudaMemcpyAsync(slots.p, ids.data(), size_t(n) * 4, cudaMemcpyHostToDevice, stream));
    cuda::launch_fill_random(src.p, DType::kBF16, n * cache.row_width, seed + uint64_t(r0), stream);
    const MatView m{src.p, DType::kBF16, n, cache.row_width, cache.row_width};
    cuda::launch_fp8_cache_write(m, static_cast<const int32_t*>(slots.p), cache, 0, stream);
    MLRA_CUDA_CHECK(cudaStreamSynchronize(stream));  // ids is reused by the next chunk's copy
  }
}

Result bench_one(int device, const KernelOptions& kernels, const Variant& v, bool fp8, int64_t ctx,
                 int batch, int page_size, size_t l2_bytes, int replays, cudaStream_t stream) {
  const int64_t width = v.row_width();
  const int64_t pages_per_seq = (ctx + page_size - 1) / page_size;
  const int64_t num_pages = pages_per_seq * batch;
  const size_t cache_bytes = size_t(num_pages) * page_size * v.row_bytes(fp8);
  PagedCacheView view{nullptr, fp8 ? DType::kU8 : DType::kBF16, num_pages, page_size,
                      int32_t(width)};
  if (fp8) {
    view.encoding = CacheEncoding::kFp8E4M3;
    view.fp8 = v.fp8();
  }
  // Rotate over enough cache copies that consecutive runs do not hit L2.
  const int copies = int(std::clamp<size_t>(4 * l2_bytes / cache_bytes + 1, 1, 16));
  std::vector<std::unique_ptr<DeviceBuffer>> caches;
  for (int c = 0; c < copies; ++c) {
    caches.push_back(std::make_unique<DeviceBuffer>(cache_bytes));
    view.data = caches.back()->p;
    if (fp8)
      fill_fp8_cache(view, 11 + c, stream);
    else
      cuda::launch_fill_random(caches.back()->p, DType::kBF16, int64_t(cache_bytes / 2), 11 + c,
                               stream);
  }
  std::mt19937 rng(1234);
  std::vector<int32_t> ids(num_pages), indptr(batch + 1), seq(batch), pos(batch, int32_t(ctx - 1));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  for (int b = 0; b <= batch; ++b) indptr[b] = int32_t(b * pages_per_seq);
  std::iota(seq.begin(), seq.end(), 0);
  const int q_width = v.latent ? v.a_dim + v.r_dim : v.a_dim;
  DeviceBuffer q(size_t(batch) * v.heads * q_width * 2), out(size_t(batch) * v.heads * v.a_dim * 2);
  DeviceBuffer meta(sizeof(int32_t) * (ids.size() + indptr.size() + seq.size() + pos.size()));
  cuda::launch_fill_random(q.p, DType::kBF16, int64_t(batch) * v.heads * q_width, 5, stream);
  int32_t* d_ids = static_cast<int32_t*>(meta.p);
  int32_t* d_indptr = d_ids + ids.size();
  int32_t* d_seq = d_indptr + indptr.size();
  int32_t* d_pos = d_seq + seq.size();
  auto put = [&](int32_t* dst, const std::vector<int32_t>& src) {
    MLRA_CUDA_CHECK(
        cudaMemcpyAsync(dst, src.data(), src.size() * 4, cudaMemcpyHostToDevice, stream));
  };
  put(d_ids, ids);
  put(d_indptr, indptr);
  put(d_seq, seq);
  put(d_pos, pos);

  PagedAttentionArgs a;
  a.kernel = v.latent ? AttentionKernel::kLatent : AttentionKernel::kKv;
  a.q = q.p;
  a.q_dtype = DType::kBF16;
  a.q_token_stride = int64_t(v.heads) * q_width;
  a.q_head_stride = q_width;
  a.num_tokens = batch;
  a.num_heads = v.heads;
  a.a_dim = v.a_dim;
  a.r_dim = v.r_dim;
  a.v_dim = v.a_dim;
  for (int h = 0; h < v.heads; ++h) {
    const int g = v.latent ? 0 : h / (v.heads / v.kv_heads);
    a.a_offset.push_back(g * v.a_dim);
    a.v_offset.push_back(v.latent ? 0 : (v.kv_heads + g) * v.a_dim);
  }
  a.r_offset = v.latent ? v.a_dim : 0;
  view.data = caches[0]->p;
  a.cache = view;
  a.token_seq = d_seq;
  a.token_pos = d_pos;
  a.page_indptr = d_indptr;
  a.page_indices = d_ids;
  a.num_seqs = batch;
  a.scale = 1.0f / std::sqrt(float(q_width));
  a.out = out.p;
  a.out_dtype = DType::kBF16;
  a.out_token_stride = int64_t(v.heads) * v.a_dim;
  a.out_head_stride = v.a_dim;

  cuda::CudaPagedAttention attention(device, kernels);
  attention.plan(a, stream);  // once per step, outside the timed graph
  attention.run(a, stream);   // first run sets kernel attributes before capture
  MLRA_CUDA_CHECK(cudaStreamSynchronize(stream));

  cudaGraph_t graph;
  cudaGraphExec_t exec;
  MLRA_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  for (int c = 0; c < copies; ++c) {
    a.cache.data = caches[c]->p;
    attention.run(a, stream);
  }
  MLRA_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  MLRA_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  const float ms =
      time_ms(stream, replays, [&] { MLRA_CUDA_CHECK(cudaGraphLaunch(exec, stream)); });
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);

  Result r;
  r.us = ms * 1e3 / copies;
  const double bytes = double(ctx) * batch * double(v.row_bytes(fp8));
  r.gbs = bytes / (r.us * 1e-6) / 1e9;
  r.path = cuda::attention_path_name(attention.path());
  return r;
}

int run_bench(const BenchOptions& o) {
  std::vector<KernelOptions> option_sets;
  for (const auto& k : o.kernels.empty() ? std::vector<std::string>{""} : o.kernels)
    option_sets.push_back(bench::kernels_of(k));
  MLRA_CUDA_CHECK(cudaSetDevice(o.device));
  cudaDeviceProp prop{};
  MLRA_CUDA_CHECK(cudaGetDeviceProperties(&prop, o.device));
  cudaStream_t stream;
  MLRA_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const double copy_gbs = copy_bandwidth_gbs(stream);
  std::printf("device: %s, %d SMs, L2 %.0f MB\n", prop.name, prop.multiProcessorCount,
              prop.l2CacheSize / 1e6);
  std::printf("device-to-device copy bandwidth (1 GiB, read + write): %.0f GB/s\n", copy_gbs);
  for (size_t k = 0; k < option_sets.size(); ++k)
    std::printf("kernel options k%zu: %s\n", k, bench::kernels_line(option_sets[k]).c_str());
  std::printf("\n");

  std::vector<Variant> variants;
  for (const Variant& v :
       {Variant{"MLRA-4 TP4", 64, 128, 64, true}, Variant{"GLA-2 TP2", 32, 256, 64, true},
        Variant{"MLA", 64, 512, 64, true}, Variant{"GQA TP8", 8, 128, 0, false},
        Variant{"MHA TP8", 3, 128, 0, false, 3}})
    if (o.variants.empty() ||
        std::find(o.variants.begin(), o.variants.end(), v.name) != o.variants.end())
      variants.push_back(v);
  // Keyed by (options, cache dtype, context, batch): MLA's time over MLRA-4's; FP8's over bf16's
  // under the same options.
  std::map<std::tuple<size_t, bool, int64_t, int>, double> mlra_us;
  std::printf("%-11s %-3s %-9s %-10s %8s %6s %10s %9s %7s %9s %9s\n", "variant", "k", "cache",
              "kernel", "context", "batch", "time_us", "GB/s", "%copy", "MLA/MLRA", "bf16/fp8");
  for (const Variant& v : variants)
    for (int ck : o.contexts_k)
      for (int b : o.batches) {
        const int64_t ctx = int64_t(ck) * 1024;
        std::vector<double> bf16_us(option_sets.size(), 0.0);
        for (const std::string& dtype : o.kv_cache_dtypes)
          for (size_t k = 0; k < option_sets.size(); ++k) {
            const bool fp8 = dtype == "fp8_e4m3";
            const double gb = double(ctx) * b * double(v.row_bytes(fp8)) / 1e9;
            if (gb > o.max_cache_gb) continue;
            const Result r = bench_one(o.device, option_sets[k], v, fp8, ctx, b, o.page_size,
                                       size_t(prop.l2CacheSize), o.replays, stream);
            char mla_ratio[32] = "", fp8_ratio[32] = "";
            if (v.name == "MLRA-4 TP4") mlra_us[{k, fp8, ctx, b}] = r.us;
            if (v.name == "MLA" && mlra_us.count({k, fp8, ctx, b}))
              std::snprintf(mla_ratio, sizeof mla_ratio, "%.2f", r.us / mlra_us[{k, fp8, ctx, b}]);
            if (!fp8) bf16_us[k] = r.us;
            if (fp8 && bf16_us[k] > 0)
              std::snprintf(fp8_ratio, sizeof fp8_ratio, "%.2f", bf16_us[k] / r.us);
            std::printf("%-11s k%-2zu %-9s %-10s %7dK %6d %10.1f %9.0f %6.1f%% %9s %9s\n",
                        v.name.c_str(), k, fp8 ? "fp8_e4m3" : "bf16", r.path.c_str(), ck, b, r.us,
                        r.gbs, 100.0 * r.gbs / copy_gbs, mla_ratio, fp8_ratio);
            std::fflush(stdout);
          }
      }
  MLRA_CUDA_CHECK(cudaStreamDestroy(stream));
  return 0;
}

#else

int run_bench(const BenchOptions&) {
  return bench::built_without_cuda("attention");
}

#endif

}  // namespace

void register_bench_attention(CLI::App& app, int& exit_code) {
  auto opts = std::make_shared<BenchOptions>();
  CLI::App* sub = app.add_subcommand("attention", "decode paged-attention kernel benchmark");
  sub->add_option("--device", opts->device, "CUDA device ordinal");
  sub->add_option("--max-cache-gb", opts->max_cache_gb, "skip configurations with a larger cache");
  sub->add_option("--replays", opts->replays, "timed graph replays per configuration");
  sub->add_option("--contexts-k", opts->contexts_k, "context lengths in units of 1024");
  sub->add_option("--batches", opts->batches, "batch sizes");
  sub->add_option("--page-size", opts->page_size, "page size (16..256, power of two)");
  sub->add_option("--variants", opts->variants,
                  "subset: \"MLRA-4 TP4\" \"GLA-2 TP2\" MLA \"GQA TP8\" \"MHA TP8\"");
  sub->add_option("--kv-cache-dtype", opts->kv_cache_dtypes,
                  "cache encodings to run, each configuration in every one (auto: bf16)")
      ->check(CLI::IsMember({"auto", "fp8_e4m3"}));
  sub->add_option("--kernels", opts->kernels,
                  "kernel options as server config \"kernels\" objects, each run on every "
                  "configuration, e.g. '{}' '{\"kv_split_per_sm\":2}' (default: {})");
  bench::on_run(sub, exit_code, [opts] { return run_bench(*opts); });
}

}  // namespace mlra
