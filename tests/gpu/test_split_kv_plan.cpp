// The device's split-KV plan (one CTA, kernels/split_kv_plan.cu) against the sequential host
// reference (kernels/split_kv_plan_host.cpp, whose properties the CPU suite checks): decode
// batches, long contexts that split, and query-packed prefill chunks, entry for entry.
#include <catch2/catch.hpp>

#include <cuda_runtime.h>

#include <random>
#include <vector>

#include "gpu_test_util.h"
#include "kernels/cuda_check.h"
#include "kernels/split_kv_plan.h"

using namespace mlra;
using namespace mlra::cuda;

namespace {

template <class T>
std::vector<T> fetch(const T* device, size_t n) {
  std::vector<T> host(n);
  if (n > 0) MLRA_CUDA_CHECK(cudaMemcpy(host.data(), device, n * sizeof(T), cudaMemcpyDefault));
  return host;
}

struct DeviceBytes {
  void* p = nullptr;
  explicit DeviceBytes(size_t n) { MLRA_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(n, 256))); }
  ~DeviceBytes() { cudaFree(p); }
};

void check_device_plan(const SplitKvShape& shape, const std::vector<int32_t>& pos,
                       const std::vector<int32_t>& seq) {
  const SplitKvPlanHost want = plan_split_kv_host(shape, pos, seq);
  DeviceBytes d_pos(pos.size() * 4), d_seq(seq.size() * 4), memory(split_kv_plan_bytes(shape));
  MLRA_CUDA_CHECK(cudaMemcpy(d_pos.p, pos.data(), pos.size() * 4, cudaMemcpyHostToDevice));
  MLRA_CUDA_CHECK(cudaMemcpy(d_seq.p, seq.data(), seq.size() * 4, cudaMemcpyHostToDevice));
  const SplitKvPlan plan = split_kv_plan_at(memory.p, shape);
  launch_split_kv_plan(static_cast<const int32_t*>(d_pos.p), static_cast<const int32_t*>(d_seq.p),
                       plan, nullptr);
  MLRA_CUDA_CHECK(cudaDeviceSynchronize());
  const int32_t num_items = fetch(plan.num_items, 1)[0];
  const int32_t num_merges = fetch(plan.num_merges, 1)[0];
  REQUIRE(num_items == int32_t(want.items.size()));
  CHECK(fetch(plan.items, size_t(num_items)) == want.items);
  CHECK(fetch(plan.merges, pos.size()) == want.merges);
  REQUIRE(num_merges == int32_t(want.merge_tokens.size()));
  CHECK(fetch(plan.merge_tokens, size_t(num_merges)) == want.merge_tokens);
}

}  // namespace

TEST_CASE("split-KV plan: the device plan equals the host reference", "[gpu][attention][splitkv]") {
  const uint32_t seed = gputest::fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  for (int trial = 0; trial < 120; ++trial) {
    // Decode batches (one token per sequence) and prefill chunks (several), up to 2,500 tokens
    // so the plan kernel's 1,024-thread blocks loop.
    const bool prefill = trial % 2 == 1;
    const int seqs = 1 + int(rng() % (prefill ? 5 : 300));
    std::vector<int32_t> pos, seq;
    for (int s = 0; s < seqs; ++s) {
      const int len = 1 + int(rng() % (trial % 3 == 0 ? 200000 : 5000));
      const int per_seq = prefill ? 1 + int(rng() % 500) : 1;
      for (int p = std::max(0, len - per_seq); p < len; ++p) {
        pos.push_back(p);
        seq.push_back(s);
      }
    }
    SplitKvShape shape;
    shape.num_tokens = int32_t(pos.size());
    shape.target_chunks = 1 + int32_t(rng() % 600);
    shape.min_chunk_tiles = 1 + int32_t(rng() % 3);
    shape.tokens_per_item = prefill ? 1 << (rng() % 5) : 1;
    INFO("trial " << trial << " tokens " << pos.size() << " k " << shape.tokens_per_item);
    check_device_plan(shape, pos, seq);
  }
}
