// CUDA sampling kernels, one block per logits row, mirroring the CPU reference (sampling_cpu.cpp)
// operation for operation: penalties and temperature in round-to-nearest float ops (never fused),
// weights exp(double(x) - max) in double, candidates in (score desc, id asc) order when a row
// truncates (a stable segmented radix sort), token-id order otherwise, and the inverse-CDF draw
// at uniform_from(seed, index) computed on the device by the same code as on the host. Sums run
// in a fixed tree order, so results are deterministic; they differ from the CPU's sequential
// sums only in the last bits, which moves a token only when u lands within ~1e-15 of a boundary.
#include <cub/cub.cuh>

#include <climits>

#include "kernels/counter_rng.h"
#include "kernels/cuda_check.h"
#include "kernels/sampling_cuda.h"

namespace mlra::cuda {
namespace {

constexpr int kThreads = 512;

struct ArgBest {
  float v;
  int32_t i;
};
// Larger score first; equal scores: lower id first (std::max_element and the CPU sort order).
struct BetterOf {
  __device__ ArgBest operator()(const ArgBest& a, const ArgBest& b) const {
    return (a.v > b.v || (a.v == b.v && a.i < b.i)) ? a : b;
  }
};
struct MaxOf {
  __device__ float operator()(float a, float b) const { return a > b ? a : b; }
};
struct MinOf {
  __device__ int32_t operator()(int32_t a, int32_t b) const { return a < b ? a : b; }
};
struct SumOf {
  __device__ double operator()(double a, double b) const { return a + b; }
};

using ReduceF = cub::BlockReduce<float, kThreads>;
using ReduceI = cub::BlockReduce<int32_t, kThreads>;
using ReduceD = cub::BlockReduce<double, kThreads>;
using ReduceA = cub::BlockReduce<ArgBest, kThreads>;
using ScanD = cub::BlockScan<double, kThreads>;

struct Shared {
  union {
    ReduceF::TempStorage f;
    ReduceI::TempStorage i;
    ReduceD::TempStorage d;
    ReduceA::TempStorage a;
    ScanD::TempStorage s;
  } temp;
  float f;
  int32_t i;
  double d;
  ArgBest a;
};

// Block-wide results, broadcast to every thread. Each call ends with a barrier, so the shared
// temp storage can be reused by the next one.
__device__ float block_max(Shared& sh, float x) {
  const float r = ReduceF(sh.temp.f).Reduce(x, MaxOf());
  if (threadIdx.x == 0) sh.f = r;
  __syncthreads();
  const float out = sh.f;
  __syncthreads();
  return out;
}
__device__ int32_t block_min(Shared& sh, int32_t x) {
  const int32_t r = ReduceI(sh.temp.i).Reduce(x, MinOf());
  if (threadIdx.x == 0) sh.i = r;
  __syncthreads();
  const int32_t out = sh.i;
  __syncthreads();
  return out;
}
__device__ double block_sum(Shared& sh, double x) {
  const double r = ReduceD(sh.temp.d).Reduce(x, SumOf());
  if (threadIdx.x == 0) sh.d = r;
  __syncthreads();
  const double out = sh.d;
  __syncthreads();
  return out;
}
__device__ ArgBest block_best(Shared& sh, ArgBest x) {
  const ArgBest r = ReduceA(sh.temp.a).Reduce(x, BetterOf());
  if (threadIdx.x == 0) sh.a = r;
  __syncthreads();
  const ArgBest out = sh.a;
  __syncthreads();
  return out;
}
// Exclusive prefix of per-thread sums (thread order = candidate order); *total gets the sum.
__device__ double block_exclusive(Shared& sh, double x, double* total) {
  double prefix, sum;
  ScanD(sh.temp.s).ExclusiveSum(x, prefix, sum);
  __syncthreads();
  *total = sum;
  return prefix;
}

__device__ float row_max(Shared& sh, const float* x, int32_t n) {
  float m = -INFINITY;
  for (int32_t i = threadIdx.x; i < n; i += kThreads) m = fmaxf(m, x[i]);
  return block_max(sh, m);
}

// Best candidate strictly after `prev` in (score desc, id asc) order; prev.i < 0: the first.
__device__ ArgBest row_best_after(Shared& sh, const float* x, int32_t n, ArgBest prev) {
  ArgBest best{-INFINITY, INT_MAX};
  for (int32_t i = threadIdx.x; i < n; i += kThreads) {
    const bool after = prev.i < 0 || x[i] < prev.v || (x[i] == prev.v && i > prev.i);
    if (after) best = BetterOf()(best, ArgBest{x[i], i});
  }
  return block_best(sh, best);
}

__device__ double weight(const float* vals, int32_t i, float m) {
  return exp(static_cast<double>(vals[i]) - static_cast<double>(m));
}

// Each thread owns the contiguous candidates [begin, begin + chunk); returns the mass before its
// chunk among candidates < limit, *total the mass of all candidates < limit.
__device__ double chunk_prefix(Shared& sh, const float* vals, float m, int32_t begin, int32_t chunk,
                               int32_t limit, double* total) {
  double s = 0.0;
  const int32_t end = min(begin + chunk, limit);
  for (int32_t i = begin; i < end; ++i) s += weight(vals, i, m);
  return block_exclusive(sh, s, total);
}

__global__ void prepare_kernel(SamplingDeviceArgs a) {
  const int32_t r = blockIdx.x, V = a.vocab;
  const SamplingRow p = a.params[r];
  const float* x = a.logits + r * a.ld;
  float* w = a.work + int64_t(r) * V;
  int32_t* ids = a.ids + int64_t(r) * V;
  for (int32_t i = threadIdx.x; i < V; i += kThreads) {
    w[i] = x[i];
    ids[i] = i;
  }
  __syncthreads();
  // Listed tokens are distinct, so no two threads touch one score.
  for (int32_t e = a.penalty_indptr[r] + threadIdx.x; e < a.penalty_indptr[r + 1]; e += kThreads) {
    const int32_t t = a.penalty_tokens[e], count = a.penalty_counts[e];
    if (t < 0 || t >= V) continue;
    float v = w[t];
    if (p.repetition_penalty != 1.0f)
      v = v > 0 ? __fdiv_rn(v, p.repetition_penalty) : __fmul_rn(v, p.repetition_penalty);
    if ((p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f) && count > 0)
      v = __fsub_rn(v, __fadd_rn(__fmul_rn(p.frequency_penalty, float(count)), p.presence_penalty));
    w[t] = v;
  }
  __syncthreads();
  if (p.greedy()) return;
  const float inv_t = __fdiv_rn(1.0f, p.temperature);
  for (int32_t i = threadIdx.x; i < V; i += kThreads) w[i] = __fmul_rn(w[i], inv_t);
}

__global__ void draw_kernel(SamplingDeviceArgs a) {
  __shared__ Shared sh;
  const int32_t r = blockIdx.x, V = a.vocab;
  const SamplingRow p = a.params[r];
  const float* w = a.work + int64_t(r) * V;
  int32_t token;
  if (p.greedy()) {
    token = row_best_after(sh, w, V, ArgBest{0.0f, -1}).i;
  } else {
    const bool truncating = p.truncates(V);
    const float* vals = truncating ? a.sorted + int64_t(r) * V : w;
    const float m = row_max(sh, vals, V);
    const int32_t K = truncating && p.top_k > 0 && p.top_k < V ? p.top_k : V;
    const int32_t chunk = (V + kThreads - 1) / kThreads, begin = int32_t(threadIdx.x) * chunk;
    double total;
    double start = chunk_prefix(sh, vals, m, begin, chunk, K, &total);
    int32_t keep = K;
    if (truncating && p.top_p < 1.0f) {
      // Smallest prefix whose mass reaches top_p of the top-k mass.
      const double threshold = static_cast<double>(p.top_p) * total;
      int32_t n = K;
      double cum = start;
      for (int32_t i = begin; i < min(begin + chunk, K); ++i) {
        cum += weight(vals, i, m);
        if (cum >= threshold) {
          n = i + 1;
          break;
        }
      }
      keep = max(block_min(sh, n), 1);
    }
    if (truncating && p.min_p > 0.0f) {
      const double floor = static_cast<double>(p.min_p) * weight(vals, 0, m);
      int32_t n = keep;
      for (int32_t i = max(begin, 1); i < min(begin + chunk, keep); ++i) {
        if (weight(vals, i, m) < floor) {
          n = i;
          break;
        }
      }
      keep = block_min(sh, n);
    }
    if (keep != K) start = chunk_prefix(sh, vals, m, begin, chunk, keep, &total);
    const double target = uniform_from(p.seed, p.index) * total;
    int32_t pos = INT_MAX;
    double cum = start;
    for (int32_t i = begin; i < min(begin + chunk, keep); ++i) {
      cum += weight(vals, i, m);
      if (cum > target) {
        pos = i;
        break;
      }
    }
    pos = block_min(sh, pos);
    if (pos == INT_MAX) pos = keep - 1;  // rounding left the target past the last candidate
    token = truncating ? a.sorted_ids[int64_t(r) * V + pos] : pos;
  }
  if (threadIdx.x == 0) a.tokens[r] = token;
  if (p.logprobs < 0) {
    if (threadIdx.x == 0) a.logprobs[r] = 0.0f;
    return;
  }
  // Raw model log-softmax over the text vocabulary.
  const float* x = a.logits + r * a.ld;
  const float mx = row_max(sh, x, V);
  double s = 0.0;
  for (int32_t i = threadIdx.x; i < V; i += kThreads) s += exp(static_cast<double>(x[i]) - mx);
  const double lse = static_cast<double>(mx) + log(block_sum(sh, s));
  if (threadIdx.x == 0) a.logprobs[r] = static_cast<float>(static_cast<double>(x[token]) - lse);
  ArgBest prev{0.0f, -1};
  const int32_t n = min(p.logprobs, min(a.max_top, V));
  for (int32_t j = 0; j < n; ++j) {
    prev = row_best_after(sh, x, V, prev);
    if (threadIdx.x == 0) {
      a.top_tokens[int64_t(r) * a.max_top + j] = prev.i;
      a.top_logprobs[int64_t(r) * a.max_top + j] =
          static_cast<float>(static_cast<double>(prev.v) - lse);
    }
  }
}

}  // namespace

void launch_sampling_prepare(const SamplingDeviceArgs& a, cudaStream_t stream) {
  MLRA_REQUIRE(a.rows >= 0 && a.vocab > 0 && a.ld >= a.vocab, "sampling: bad logits shape");
  if (a.rows == 0) return;
  prepare_kernel<<<a.rows, kThreads, 0, stream>>>(a);
  MLRA_CUDA_LAUNCH_CHECK();
}

void sort_sampling_rows(void* temp, size_t& temp_bytes, const SamplingDeviceArgs& a,
                        int32_t segments, const int32_t* begin, const int32_t* end,
                        cudaStream_t stream) {
  const int64_t items = int64_t(a.rows) * a.vocab;
  MLRA_REQUIRE(items < INT_MAX, "sampling: rows x vocabulary exceeds the sort's int range");
  MLRA_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(
      temp, temp_bytes, a.work, a.sorted, a.ids, a.sorted_ids, int(items), segments, begin, end, 0,
      32, stream));
}

void launch_sampling_draw(const SamplingDeviceArgs& a, cudaStream_t stream) {
  if (a.rows == 0) return;
  draw_kernel<<<a.rows, kThreads, 0, stream>>>(a);
  MLRA_CUDA_LAUNCH_CHECK();
}

}  // namespace mlra::cuda
