// The FP8 cache on the GPU against the CPU backend: the device codec equals the hardware's
// float -> E4M3 conversion on every float32 and the host build of the same header; cache_write
// (K and V groups apart, a latent row with its bf16 tail) and the fused latent write leave the
// CPU's bytes bit for bit; the gather dequantizes to the CPU's values; attention over an FP8
// cache matches the CPU reference over the same bytes; and every tiny variant's logits with the
// FP8 cache match the CPU backend's FP8 logits.
#include <catch2/catch.hpp>

#include <cuda_runtime.h>

#include <cstring>
#include <filesystem>
#include <random>

#include "../step_builder.h"
#include "engine/local_runner.h"
#include "fp8_device_codec.h"
#include "gpu_test_util.h"
#include "kernels/fp8_e4m3.h"
#include "kernels/paged_attention_cuda.h"

using namespace mlra;
using namespace mlra::gputest;

namespace {

// An FP8 cache of `pages` pages on both backends, zero-filled so untouched bytes compare equal.
struct Fp8Pair {
  Fp8CacheLayout layout;
  int32_t page_size;
  int64_t pages;
  Tensor cpu, gpu;
  Fp8Pair(Fp8CacheLayout l, int32_t ps, int64_t n) : layout(l), page_size(ps), pages(n) {
    const int64_t bytes = n * l.page_bytes(ps);
    cpu = backends().cpu->alloc({bytes}, DType::kU8);
    gpu = backends().gpu->alloc({bytes}, DType::kU8);
    std::memset(cpu.data, 0, size_t(bytes));
    REQUIRE(cudaMemset(gpu.data, 0, size_t(bytes)) == cudaSuccess);
  }
  PagedCacheView view(const Tensor& t) const {
    PagedCacheView v{t.data, DType::kU8, pages, page_size, int32_t(layout.values())};
    v.encoding = CacheEncoding::kFp8E4M3;
    v.fp8 = layout;
    return v;
  }
  std::vector<uint8_t> gpu_bytes() const {
    std::vector<uint8_t> out(gpu.bytes());
    backends().gpu->synchronize();
    REQUIRE(cudaMemcpy(out.data(), gpu.data, out.size(), cudaMemcpyDeviceToHost) == cudaSuccess);
    return out;
  }
  std::vector<uint8_t> cpu_bytes() const {
    const auto* p = static_cast<const uint8_t*>(cpu.data);
    return {p, p + cpu.bytes()};
  }
};

// bf16-exact values spanning the range: normal, an outlier per row, tiny values, a zero group.
std::vector<float> spanning_rows(std::mt19937& rng, int64_t rows, int64_t cols, int64_t gw) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      float x = normal(rng);
      if (r % 3 == 1) x *= 1e-30f;         // tiny (E4M3 subnormals after scaling)
      if (c == (r * 7) % cols) x *= 3e3f;  // an outlier
      if (r % 4 == 2 && c < gw) x = 0.0f;  // an all-zero first group
      v[size_t(r * cols + c)] = round_bf16(x);
    }
  return v;
}

}  // namespace

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

TEST_CASE("cuda attention over an fp8 cache matches the cpu reference on the same bytes",
          "[gpu][fp8][attention]") {
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  Backend& cpu = *backends().cpu;
  Backend& gpu = *backends().gpu;
  struct Shape {
    Fp8CacheLayout layout;
    int32_t a_dim, r_dim, v_dim, heads;
    bool latent;
  };
  // MLRA-4 TP4-like (one latent of 128 + k_pe 64), MLA-like (512 + 64), K/V 128 (2 KV heads).
  for (const Shape s :
       {Shape{{1, 128, 64}, 128, 64, 128, 24, true}, Shape{{1, 512, 64}, 512, 64, 512, 8, true},
        Shape{{4, 128, 0}, 128, 0, 128, 8, false}}) {
    const int32_t W = int32_t(s.layout.values()), ps = 64;
    const std::vector<int32_t> lens = {200, 77, 1};
    std::vector<int32_t> indptr{0}, indices, slots;
    for (int32_t n : lens) {
      for (int32_t p = 0; p < (n + ps - 1) / ps; ++p) indices.push_back(int32_t(indices.size()));
      indptr.push_back(int32_t(indices.size()));
    }
    for (size_t q = 0; q < lens.size(); ++q)
      for (int32_t p = 0; p < lens[q]; ++p)
        slots.push_back(indices[size_t(indptr[q] + p / ps)] * ps + p % ps);
    const int64_t n = int64_t(slots.size()), pages = int64_t(indices.size());
    Fp8Pair cache(s.layout, ps, pages);
    // Unwritten rows hold NaN codes and NaN scales: kernels must never let them into a result.
    std::memset(cache.cpu.data, 0xFF, cache.cpu.bytes());
    const std::vector<float> rows = spanning_rows(rng, n, W, s.layout.group_width);
    Tensor src = make(cpu, {n, W}, DType::kF32, rows);
    cpu.cache_write(as_mat(src, W), slots.data(), cache.view(cache.cpu), 0);
    REQUIRE(cudaMemcpy(cache.gpu.data, cache.cpu.data, cache.cpu.bytes(), cudaMemcpyHostToDevice) ==
            cudaSuccess);
    // A decode step (one token per sequence: the latent-128 kernel takes the MLRA-4 shape), then
    // a prefill chunk of the first sequence with decode rows of the others (the generic kernel).
    for (const bool decode : {true, false}) {
      INFO((decode ? "decode step" : "mixed step"));
      const std::vector<int32_t> token_seq =
          decode ? std::vector<int32_t>{0, 1, 2} : std::vector<int32_t>{0, 0, 0, 0, 0, 1, 2};
      const std::vector<int32_t> token_pos =
          decode ? std::vector<int32_t>{199, 76, 0}
                 : std::vector<int32_t>{190, 191, 192, 193, 199, 76, 0};
      const int32_t T = int32_t(token_seq.size()), qw = s.a_dim + s.r_dim;
      const std::vector<float> q = rounded(random_vec(rng, size_t(T * s.heads * qw)), DType::kBF16);
      auto args = [&](Backend& b, const PagedCacheView& view, DType act,
                      std::vector<Tensor>& keep) {
        keep = {make(b, {T, s.heads * qw}, act, q),
                b.alloc({T, s.heads * s.v_dim}, act),
                make_i32(b, token_seq),
                make_i32(b, token_pos),
                make_i32(b, indptr),
                make_i32(b, indices)};
        PagedAttentionArgs a;
        a.q = keep[0].data;
        a.q_dtype = act;
        a.q_token_stride = s.heads * qw;
        a.q_head_stride = qw;
        a.num_tokens = T;
        a.num_heads = s.heads;
        a.a_dim = s.a_dim;
        a.r_dim = s.r_dim;
        a.v_dim = s.v_dim;
        for (int32_t h = 0; h < s.heads; ++h) {
          const int32_t kv = s.latent ? 0 : h % 2;
          a.a_offset.push_back(kv * s.a_dim);
          a.v_offset.push_back(s.latent ? 0 : (2 + kv) * s.v_dim);
        }
        a.r_offset = int32_t(s.layout.quantized());
        a.cache = view;
        a.token_seq = keep[2].as<int32_t>();
        a.token_pos = keep[3].as<int32_t>();
        a.page_indptr = keep[4].as<int32_t>();
        a.page_indices = keep[5].as<int32_t>();
        a.num_seqs = int32_t(lens.size());
        a.scale = 0.07f;
        a.kernel = s.latent ? AttentionKernel::kLatent : AttentionKernel::kKv;
        a.out = keep[1].data;
        a.out_dtype = act;
        a.out_token_stride = s.heads * s.v_dim;
        a.out_head_stride = s.v_dim;
        return a;
      };
      std::vector<Tensor> keep_c, keep_g;
      const PagedAttentionArgs ac = args(cpu, cache.view(cache.cpu), DType::kF32, keep_c);
      const PagedAttentionArgs ag = args(gpu, cache.view(cache.gpu), DType::kBF16, keep_g);
      if (decode && W == 192)
        CHECK(cuda::CudaPagedAttention::choose_path(ag) == cuda::AttentionPath::kLatent128);
      cpu.paged_attention(ac);
      gpu.paged_attention(ag);
      const auto want = download(cpu, as_mat(keep_c[1], s.heads * s.v_dim));
      const auto got = download(gpu, as_mat(keep_g[1], s.heads * s.v_dim));
      INFO("W " << W);
      CHECK(all_finite(got));
      CHECK(rel_l2(got, want) < kBf16Tol);
    }
  }
}

TEST_CASE("CUDA forward with the fp8 cache matches the CPU's for every variant",
          "[gpu][fp8][model]") {
  const char* variants[] = {"mha",          "gqa",           "mqa",           "gta",
                            "mfa",          "tpa",           "mla",           "gla2",
                            "gla4",         "mlra2",         "mlra4",         "gqa_gated",
                            "mla_gated",    "gla2_gated",    "mlra2_gated",   "mlra4_gated",
                            "mla_no_scale", "gla2_no_scale", "mlra2_no_scale"};
  std::mt19937 rng(23);
  for (const char* v : variants) {
    INFO(v);
    auto runner = [&](const std::string& backend) {
      RunnerConfig o;
      o.model_dir = std::filesystem::path(MLRA_TEST_DATA) / "tiny" / v;
      o.variant = v;
      o.backend = backend;
      o.page_size = 16;
      o.num_pages = 64;
      o.cuda_graph_max_batch = backend == "cuda" ? 8 : 0;  // decode steps replay graphs
      o.kv_cache = CacheEncoding::kFp8E4M3;
      return make_local_runner(o);
    };
    auto cpu = runner("cpu");
    auto gpu = runner("cuda");
    const int64_t V = cpu->config().vocab_size;
    std::vector<int32_t> prompt(37);
    for (auto& t : prompt) t = int32_t(rng() % uint32_t(V));
    std::vector<float> lc, lg;
    cpu->execute(mlra::testing::build_step({{0, 0, prompt, true}}, 16, 16), lc);
    gpu->execute(mlra::testing::build_step({{0, 0, prompt, true}}, 16, 16), lg);
    // bf16 activations put about 1 value in 64 on the other side of an E4M3 rounding boundary
    // (a bf16 step is 1/64 of an E4M3 step): twice test_gpu_model.cpp's bf16 tolerance.
    CHECK(mlra::testing::rel_l2(lg, lc) < 4e-2);
    for (int32_t k = 0; k < 4; ++k) {
      const std::vector<int32_t> tok = {int32_t(rng() % uint32_t(V))};
      cpu->execute(mlra::testing::build_step({{0, 37 + k, tok}}, 16, 16), lc);
      gpu->execute(mlra::testing::build_step({{0, 37 + k, tok}}, 16, 16), lg);
      CHECK(mlra::testing::rel_l2(lg, lc) < 4e-2);
    }
  }
}
