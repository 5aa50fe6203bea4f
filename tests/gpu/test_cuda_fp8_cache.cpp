// The FP8 cache on the GPU against the CPU backend: the device codec equals the hardware's
// float -> E4M3 conversion on every float32 and the host build of the same header; cache_write
// (K and V groups apart, a latent row with its bf16 tail) and the fused latent write leave the
// CPU's bytes bit for bit; the gather dequantizes to the CPU's values; and every tiny variant's
// logits with the FP8 cache match the CPU backend's FP8 logits (attention over an FP8 cache:
// test_cuda_fp8_attention.cpp).
#include <catch2/catch.hpp>

#include <cuda_runtime.h>

#include <cstring>
#include <random>

#include "../step_builder.h"
#include "engine/local_runner.h"
#include "fp8_cross_backend_bound.h"
#include "fp8_device_codec.h"
#include "fp8_test_util.h"
#include "gpu_decode_fixture.h"
#include "gpu_test_util.h"
#include "kernels/fp8_e4m3.h"
#include "kernels/paged_attention_cuda.h"

using namespace mlra;
using namespace mlra::gputest;

TEST_CASE("cuda fp8 codec equals the hardware conversion and the host build", "[gpu][fp8]") {
  CHECK(fp8_encode_mismatches_vs_hardware(0, uint64_t(1) << 32) == 0);
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  std::vector<float> x(1 << 20), scale(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    x[i] = f32_from_bits(rng());
    scale[i] = i % 5 == 0 ? 0.0f : std::abs(f32_from_bits(rng())) + 1e-30f;
    if (!std::isfinite(scale[i])) scale[i] = 1.0f;
  }
  const std::vector<uint8_t> device = fp8_quantize_on_device(x, scale);
  for (size_t i = 0; i < x.size(); ++i) {
    INFO("x bits " << f32_bits(x[i]) << " scale " << scale[i]);
    REQUIRE(device[i] == fp8_quantize(x[i], scale[i]));
  }
}

TEST_CASE("cuda fp8 cache_write leaves the cpu backend's bytes", "[gpu][fp8]") {
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  Backend& cpu = *backends().cpu;
  Backend& gpu = *backends().gpu;
  // A latent row (4 groups of 128, k_pe 64) and a K/V row (2 K + 2 V heads of 128) written apart.
  for (const Fp8CacheLayout l : {Fp8CacheLayout{4, 128, 64}, Fp8CacheLayout{4, 128, 0}}) {
    Fp8Pair cache(l, 16, 6);
    const int64_t T = 37, W = l.values();
    const std::vector<float> rows = spanning_rows(rng, T, W, l.group_width);
    std::vector<int32_t> slots(T);
    for (int64_t t = 0; t < T; ++t) slots[size_t(t)] = int32_t((t * 11) % (6 * 16));
    Tensor src_c = make(cpu, {T, W}, DType::kF32, rows),
           src_g = make(gpu, {T, W}, DType::kBF16, rows);
    Tensor sl_c = make_i32(cpu, slots), sl_g = make_i32(gpu, slots);
    const std::vector<std::pair<int64_t, int64_t>> parts =
        l.tail ? std::vector<std::pair<int64_t, int64_t>>{{0, W}}
               : std::vector<std::pair<int64_t, int64_t>>{{0, 256}, {256, 256}};
    for (const auto& [c0, n] : parts) {
      cpu.cache_write(as_mat(src_c, W).cols_slice(c0, n), sl_c.as<int32_t>(), cache.view(cache.cpu),
                      int32_t(c0));
      gpu.cache_write(as_mat(src_g, W).cols_slice(c0, n), sl_g.as<int32_t>(), cache.view(cache.gpu),
                      int32_t(c0));
    }
    CHECK(cache.gpu_bytes() == cache.cpu_bytes());

    // The gather: dequantized values, as the CPU's, rounded to the bf16 output.
    Tensor out_g = gpu.alloc({T, W}, DType::kBF16);
    std::vector<float> out_c(size_t(T * W));
    gpu.cache_gather(cache.view(cache.gpu), sl_g.as<int32_t>(), T, 0, as_mat(out_g, W));
    cpu.cache_gather(cache.view(cache.cpu), sl_c.as<int32_t>(), T, 0,
                     {out_c.data(), DType::kF32, T, W, W});
    CHECK(download(gpu, as_mat(out_g, W)) == rounded(out_c, DType::kBF16));
  }
}

TEST_CASE("cuda fused latent write quantizes the row it leaves, as the cpu write would",
          "[gpu][fp8][fused]") {
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  Backend& cpu = *backends().cpu;
  Backend& gpu = *backends().gpu;
  for (const int64_t groups : {int64_t(1), int64_t(4), int64_t(0)}) {
    INFO("groups " << groups);
    const int64_t n_lat = groups ? groups : 2, lat = n_lat * 128, rot = 64, W = lat + rot, T = 21;
    Fp8Pair cache({int32_t(n_lat), 128, int32_t(rot)}, 16, 4);
    const std::vector<float> rows =
        rounded(random_vec(rng, size_t(T * W), -2.0f, 2.0f), DType::kBF16);
    const std::vector<float> gain = rounded(random_vec(rng, size_t(lat), 0.5f, 1.5f), DType::kBF16);
    std::vector<int32_t> slots(T), pos(T);
    for (int64_t t = 0; t < T; ++t) {
      slots[size_t(t)] = int32_t(63 - t);
      pos[size_t(t)] = int32_t(3 * t + 1);
    }
    Tensor row = make(gpu, {T, W}, DType::kBF16, rows), w = make(gpu, {lat}, DType::kBF16, gain);
    Tensor sl = make_i32(gpu, slots), ps = make_i32(gpu, pos);
    gpu.latent_cache_write(as_mat(row, W), w, groups, 1e-6f, 2.0f, rot, ps.as<int32_t>(), 10000.0f,
                           sl.as<int32_t>(), cache.view(cache.gpu));
    // The CPU writes the row the GPU left: the same values, so the same bytes.
    const std::vector<float> left = download(gpu, as_mat(row, W));
    Tensor src = make(cpu, {T, W}, DType::kF32, left);
    cpu.cache_write(as_mat(src, W), slots.data(), cache.view(cache.cpu), 0);
    CHECK(cache.gpu_bytes() == cache.cpu_bytes());
  }
}

TEST_CASE("CUDA forward with the fp8 cache matches the CPU's for every variant",
          "[gpu][fp8][model]") {
  std::mt19937 rng(23);
  for (const char* v : kTinyVariants) {
    INFO(v);
    auto runner = [&](const std::string& backend, CacheEncoding encoding) {
      // On the GPU, decode steps replay graphs.
      RunnerConfig o = tiny_runner_config(v, backend, backend == "cuda" ? 8 : 0);
      o.kv_cache = encoding;
      return make_local_runner(o);
    };
    auto cpu = runner("cpu", CacheEncoding::kFp8E4M3),
         gpu = runner("cuda", CacheEncoding::kFp8E4M3);
    // The same steps over bf16 caches scale what the FP8 comparison may show.
    auto cpu_plain = runner("cpu", CacheEncoding::kPlain);
    auto gpu_plain = runner("cuda", CacheEncoding::kPlain);
    const int64_t V = cpu->config().vocab_size;
    std::vector<int32_t> prompt(37);
    for (auto& t : prompt) t = int32_t(rng() % uint32_t(V));
    auto compare = [&](const StepBatch& step) {
      std::vector<float> lc, lg, pc, pg;
      cpu->execute(step, lc);
      gpu->execute(step, lg);
      cpu_plain->execute(step, pc);
      gpu_plain->execute(step, pg);
      const double fp8 = mlra::testing::rel_l2(lg, lc), bf16 = mlra::testing::rel_l2(pg, pc),
                   quant = mlra::testing::rel_l2(lc, pc);
      INFO("rel_l2 cuda/cpu " << fp8 << ", bf16 cache " << bf16 << ", fp8 vs bf16 on the CPU "
                              << quant);
      CHECK(fp8 < fp8_cross_backend_bound(bf16, quant));
    };
    compare(mlra::testing::build_step({{0, 0, prompt, true}}, 16, 16));
    for (int32_t k = 0; k < 4; ++k) {
      const std::vector<int32_t> tok = {int32_t(rng() % uint32_t(V))};
      compare(mlra::testing::build_step({{0, 37 + k, tok}}, 16, 16));
    }
  }
}
