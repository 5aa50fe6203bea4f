// NCCL communicator on 2 and 4 GPUs: (1) ranks as threads, one GPU and one CUDA backend each,
// all-reduce random f32/bf16 buffers (odd sizes, > 1M elements) and compare with the host sum;
// (2) the real multi-process path: ProcessRunner with the cuda backend (NCCL id forwarded over
// the control channel) against the CPU TP=1 runner on tiny checkpoints. Fewer than 2 GPUs: the
// cases report a warning and check nothing (the binary's main skips only when there is no GPU).
#include <catch2/catch.hpp>

#include <cuda_runtime.h>
#include <unistd.h>

#include <exception>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <thread>

#include "../step_builder.h"
#include "engine/local_runner.h"
#include "engine/process_runner.h"
#include "gpu_test_util.h"
#include "kernels/nccl_communicator.h"

using namespace mlra;
using mlra::gputest::gpu_count;
namespace fs = std::filesystem;

namespace {

WorkerProcessOptions worker_process() {
  WorkerProcessOptions p;
  // mlra_gpu_tests lives in <build>/tests, mlra-serve in <build>/server.
  p.worker_binary =
      fs::read_symlink("/proc/self/exe").parent_path().parent_path() / "server" / "mlra-serve";
  p.load_timeout_s = 120;
  return p;
}

}  // namespace

TEST_CASE("nccl communicator: all-reduce across GPUs equals the host sum", "[gpu][nccl]") {
  const int gpus = gpu_count();
  if (gpus < 2) {
    WARN("fewer than 2 GPUs: NCCL all-reduce not tested");
    return;
  }
  const std::vector<int64_t> lengths = {1, 4097, (1 << 20) + 3};
  for (int size : {2, 4}) {
    if (size > gpus) continue;
    for (DType dtype : {DType::kF32, DType::kBF16}) {
      INFO("ranks " << size << " dtype " << dtype_name(dtype));
      std::mt19937 rng(gputest::fresh_seed());
      // inputs[rank][case], rounded to the dtype so the host sum sees what the GPUs see.
      std::vector<std::vector<std::vector<float>>> inputs(static_cast<size_t>(size));
      for (auto& per_rank : inputs)
        for (int64_t n : lengths)
          per_rank.push_back(gputest::rounded(gputest::random_vec(rng, size_t(n)), dtype));
      std::vector<std::vector<std::vector<float>>> outputs(static_cast<size_t>(size));
      std::vector<std::exception_ptr> errors(static_cast<size_t>(size));
      const std::vector<char> id = make_nccl_unique_id();
      std::vector<std::thread> threads;
      for (int r = 0; r < size; ++r)
        threads.emplace_back([&, r] {
          try {
            cudaSetDevice(r);
            auto backend = make_cuda_backend(r);
            auto comm = make_nccl_communicator(id, r, size, r, *backend);
            if (comm->rank() != r || comm->size() != size)
              throw std::runtime_error("communicator reports the wrong rank or size");
            for (size_t c = 0; c < lengths.size(); ++c) {
              const int64_t n = lengths[c];
              Tensor t = gputest::make(*backend, {n}, dtype, inputs[size_t(r)][c]);
              comm->all_reduce_sum(t.data, n, dtype);
              backend->synchronize();
              std::vector<float> out(static_cast<size_t>(n));
              backend->download_f32(as_mat(t, n), out.data());
              outputs[size_t(r)].push_back(std::move(out));
            }
          } catch (...) {
            errors[size_t(r)] = std::current_exception();
          }
        });
      for (auto& t : threads) t.join();
      for (auto& e : errors)
        if (e) std::rethrow_exception(e);
      for (size_t c = 0; c < lengths.size(); ++c) {
        std::vector<float> expect(size_t(lengths[c]), 0.0f);
        for (int r = 0; r < size; ++r)
          for (size_t i = 0; i < expect.size(); ++i) expect[i] += inputs[size_t(r)][c][i];
        for (int r = 0; r < size; ++r) {
          const double err = testing::rel_l2(outputs[size_t(r)][c], expect);
          CAPTURE(c, r, err);
          CHECK(err < (dtype == DType::kF32 ? 1e-6 : 1e-2));
          CHECK(outputs[size_t(r)][c] == outputs[0][c]);  // every rank identical
        }
      }
    }
  }
}

TEST_CASE("nccl communicator: ProcessRunner on GPUs matches the CPU TP=1 runner", "[gpu][nccl]") {
  const int gpus = gpu_count();
  if (gpus < 2) {
    WARN("fewer than 2 GPUs: multi-process NCCL TP not tested");
    return;
  }
  for (const char* v : {"mlra4", "gla2", "gqa"}) {
    const fs::path dir = fs::path(MLRA_TEST_DATA) / "tiny" / v;
    RunnerConfig lo;
    lo.model_dir = dir;
    lo.variant = v;
    lo.page_size = 16;
    lo.num_pages = 32;
    auto cpu = make_local_runner(lo);
    std::mt19937 rng(23);
    std::vector<int32_t> prompt(29);
    for (auto& t : prompt) t = int32_t(rng() % uint32_t(cpu->config().vocab_size));
    const StepBatch prefill = testing::build_step({{0, 0, prompt, true}}, 16, 16);
    const StepBatch decode = testing::build_step({{0, 29, {prompt[3]}}}, 16, 16);
    std::vector<float> want_prefill, want_decode;
    cpu->execute(prefill, want_prefill);
    cpu->execute(decode, want_decode);
    for (int tp : {2, 4}) {
      if (tp > gpus) continue;
      INFO(v << " tp=" << tp);
      RunnerConfig o;
      o.model_dir = dir;
      o.variant = v;
      o.backend = "cuda";
      o.tp = tp;
      o.page_size = 16;
      o.num_pages = 32;
      o.cuda_graph_max_batch = 0;
      ProcessRunner runner(o, worker_process());
      std::vector<float> got;
      runner.execute(prefill, got);
      CHECK(testing::rel_l2(got, want_prefill) < 2e-2);
      runner.execute(decode, got);
      CHECK(testing::rel_l2(got, want_decode) < 2e-2);
      CHECK(runner.healthy());
    }
  }
}

TEST_CASE(
    "nccl communicator: GPU workers size their cache by gpu_memory_fraction and replay decode "
    "graphs",
    "[gpu][nccl][graphs]") {
  const int gpus = gpu_count();
  if (gpus < 2) {
    WARN("fewer than 2 GPUs: multi-process NCCL TP not tested");
    return;
  }
  const fs::path dir = fs::path(MLRA_TEST_DATA) / "tiny" / "mlra4";
  RunnerConfig lo;
  lo.model_dir = dir;
  lo.variant = "mlra4";
  lo.page_size = 16;
  lo.num_pages = 64;
  auto cpu = make_local_runner(lo);
  RunnerConfig o;
  o.model_dir = dir;
  o.variant = "mlra4";
  o.backend = "cuda";
  o.tp = 2;
  o.page_size = 16;
  // Memory held by other processes counts against the fraction (this test process keeps its
  // earlier tests' pools), so ask for most of each GPU.
  o.gpu_memory_fraction = 0.9;
  o.cuda_graph_max_batch = 8;
  ProcessRunner runner(o, worker_process());
  CAPTURE(runner.info().num_pages);
  CHECK(runner.info().num_pages > 10000);  // tiny-model pages: millions of tokens fit

  std::mt19937 rng(29);
  const int64_t V = cpu->config().vocab_size;
  std::vector<testing::SeqChunk> prefill;
  std::vector<int32_t> length, last;
  for (int s = 0; s < 3; ++s) {
    std::vector<int32_t> prompt(size_t(11 + 5 * s));
    for (auto& t : prompt) t = int32_t(rng() % uint32_t(V));
    prefill.push_back({s, 0, prompt, false});
    length.push_back(int32_t(prompt.size()));
    last.push_back(prompt[0]);
  }
  std::vector<float> want, got;
  cpu->execute(testing::build_step(prefill, 16, 16), want);
  runner.execute(testing::build_step(prefill, 16, 16), got);
  CHECK(testing::rel_l2(got, want) < 2e-2);
  for (int step = 0; step < 4; ++step) {  // 3 sequences -> padded 4: record once, then replay
    std::vector<testing::SeqChunk> chunks;
    for (int s = 0; s < 3; ++s)
      chunks.push_back({s, length[size_t(s)]++, {last[size_t(s)]}, false});
    const StepBatch decode = testing::build_step(chunks, 16, 16);
    cpu->execute(decode, want);
    runner.execute(decode, got);
    INFO("decode step " << step);
    CHECK(testing::rel_l2(got, want) < 2e-2);
    for (int s = 0; s < 3; ++s) last[size_t(s)] = int32_t(rng() % uint32_t(V));
  }
  CHECK(runner.healthy());
}

TEST_CASE("nccl communicator: TPLA-served MLA on GPU workers matches the CPU TPLA runner",
          "[gpu][nccl][tpla]") {
  const int gpus = gpu_count();
  if (gpus < 2) {
    WARN("fewer than 2 GPUs: TPLA over NCCL not tested");
    return;
  }
  const fs::path dir = fs::path(MLRA_TEST_DATA) / "tiny" / "mla";
  for (bool pd_separation : {false, true}) {
    INFO("pd_separation " << pd_separation);
    RunnerConfig lo;  // in-process CPU TP2 with the same transform: the oracle
    lo.model_dir = dir;
    lo.variant = "mla";
    lo.tp = 2;
    lo.page_size = 16;
    lo.num_pages = 32;
    lo.mla_tp_mode = LatentTpMode::kTpla;
    lo.tpla.transform = "random";
    lo.tpla.pd_separation = pd_separation;
    auto cpu = make_local_runner(lo);
    RunnerConfig o = lo;
    o.backend = "cuda";
    o.cuda_graph_max_batch = 0;
    ProcessRunner gpu(o, worker_process());
    CHECK(gpu.info().cache_values_per_token_per_layer ==
          cpu->info().cache_values_per_token_per_layer);
    std::mt19937 rng(31);
    std::vector<int32_t> prompt(27);
    for (auto& t : prompt) t = int32_t(rng() % uint32_t(cpu->config().vocab_size));
    std::vector<float> want, got;
    cpu->execute(testing::build_step({{0, 0, prompt, true}}, 16, 16), want);
    gpu.execute(testing::build_step({{0, 0, prompt, true}}, 16, 16), got);
    CHECK(testing::rel_l2(got, want) < 2e-2);
    for (int k = 0; k < 3; ++k) {
      const StepBatch decode = testing::build_step({{0, 27 + k, {prompt[size_t(k)]}}}, 16, 16);
      cpu->execute(decode, want);
      gpu.execute(decode, got);
      CHECK(testing::rel_l2(got, want) < 2e-2);
    }
  }
}
