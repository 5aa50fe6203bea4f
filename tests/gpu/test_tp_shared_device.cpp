// Tensor parallelism with every rank on one GPU (tp_devices all 0), so TP2/4/8 run on the GPU
// kernels of a one-GPU machine: the host-staged all-reduce (k ranks as threads on device 0,
// against the host sum; recorded into a CUDA graph, whose host node sums again at every replay);
// ProcessRunner workers sharing device 0 against the CPU at TP1 and, at bf16, the GPU at TP1,
// over prefill, a chunk over its cached prefix, a prefill over another sequence's cached page
// and decode steps (eager, then graph replays); the cache sized from the shared device's memory
// fraction; and a killed worker.
#include <catch2/catch.hpp>

#include <cuda_runtime.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <thread>

#include "../tp_test_script.h"
#include "engine/cache_budget.h"
#include "engine/local_runner.h"
#include "engine/process_runner.h"
#include "gpu_test_util.h"
#include "kernels/host_staged_communicator.h"
#include "kernels/shm_communicator.h"
#include "models/latent_calibration.h"
#include "models/shard_plan.h"
#include "models/tpla.h"

using namespace mlra;
namespace fs = std::filesystem;
using testing::kTpNumPages;
using testing::kTpPageSize;
using testing::run_tp_script;
using testing::tp_script;

namespace {

constexpr double kTol = 2e-2;  // bf16 GPU logits against either reference (tiny models)

fs::path serve_binary() {
  // mlra_gpu_tests lives in <build>/tests, mlra-serve in <build>/server.
  return fs::read_symlink("/proc/self/exe").parent_path().parent_path() / "server" / "mlra-serve";
}

fs::path tiny(const std::string& v) {
  return fs::path(MLRA_TEST_DATA) / "tiny" / v;
}

struct TpCase {
  std::string label, variant;
  bool tpla = false;
  std::string transform;  // TPLA: "hadamard" or a PCA transform file
};

RunnerConfig local_options(const TpCase& c, const std::string& backend, int tp) {
  RunnerConfig o;
  o.model_dir = tiny(c.variant);
  o.variant = c.variant;
  o.backend = backend;
  o.tp = tp;
  o.page_size = kTpPageSize;
  o.num_pages = kTpNumPages;
  o.cuda_graph_max_batch = backend == "cuda" ? 8 : 0;
  if (c.tpla) {
    o.mla_tp_mode = LatentTpMode::kTpla;
    o.tpla.transform = c.transform;
  }
  return o;
}

// Every rank on GPU 0.
RunnerConfig shared_options(const TpCase& c, int tp) {
  RunnerConfig o = local_options(c, "cuda", tp);
  o.tp_devices.assign(size_t(tp), 0);
  return o;
}

WorkerProcessOptions workers() {
  WorkerProcessOptions p;
  p.worker_binary = serve_binary();
  p.load_timeout_s = 180;
  p.step_timeout_s = 60;
  return p;
}

// A PCA transform of the tiny MLA checkpoint's latents on random calibration tokens.
fs::path write_pca_transform() {
  const fs::path dir = fs::temp_directory_path() / ("mlra-tp-shared-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::mt19937 rng(5);
  const LatentMoments m =
      collect_latent_moments(tiny("mla"), *parse_variant("mla"), testing::tp_tokens(rng, 300, 512),
                             CalibrationOptions{100});
  std::vector<std::vector<float>> per_layer;
  for (int64_t l = 0; l < m.layers(); ++l)
    per_layer.push_back(pca_transform(m.second_moment(l), m.width()));
  const fs::path file = dir / "pca.tpla";
  save_transform_file(file, per_layer, m.width());
  return file;
}

// Each step's logits within kTol of the reference's; prints the errors for the record.
void check_steps(const std::string& what, const std::vector<std::vector<float>>& got,
                 const std::vector<std::vector<float>>& want) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = testing::rel_l2(got[i], want[i]);
    std::printf("tp shared device: %s step %zu rel_l2 %.3g\n", what.c_str(), i, err);
    INFO(what << " step " << i);
    REQUIRE(!want[i].empty());
    CHECK(got[i].size() == want[i].size());
    CHECK(err < kTol);
  }
}

// A host "communicator" that adds 1 to every element: stands in for the peers' contributions,
// so a graph replay shows whether the recorded host node summed again.
class PlusOne final : public Communicator {
 public:
  explicit PlusOne(std::atomic<int>& calls) : calls_(calls) {}
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void all_reduce_sum(void* data, int64_t n, DType dtype) override {
    if (dtype != DType::kF32) throw std::invalid_argument("PlusOne: f32 only");
    for (int64_t i = 0; i < n; ++i) static_cast<float*>(data)[i] += 1.0f;
    ++calls_;
  }

 private:
  std::atomic<int>& calls_;
};

bool reaped(pid_t pid) {
  int status = 0;
  return ::waitpid(pid, &status, WNOHANG) < 0 && errno == ECHILD;
}

}  // namespace

TEST_CASE("host-staged all-reduce: k ranks on one GPU equal the rank-order host sum",
          "[gpu][tp_shared]") {
  // 256 KiB of staging: 64K f32 or 128K bf16 values per round trip, so the longest buffer takes
  // several chunks.
  const std::vector<int64_t> lengths = {1, 4097, (1 << 18) + 3};
  for (int size : {2, 4, 8}) {
    for (DType dtype : {DType::kF32, DType::kBF16}) {
      INFO("ranks " << size << " dtype " << dtype_name(dtype));
      std::mt19937 rng(gputest::fresh_seed());
      std::vector<std::vector<std::vector<float>>> inputs(static_cast<size_t>(size));
      for (auto& per_rank : inputs)
        for (int64_t n : lengths)
          per_rank.push_back(gputest::rounded(gputest::random_vec(rng, size_t(n)), dtype));
      std::vector<std::vector<std::vector<float>>> outputs(static_cast<size_t>(size));
      std::vector<std::exception_ptr> errors(static_cast<size_t>(size));
      ShmSegment segment(size);
      std::vector<std::thread> threads;
      for (int r = 0; r < size; ++r)
        threads.emplace_back([&, r] {
          try {
            cudaSetDevice(0);
            auto backend = make_cuda_backend(0);
            auto comm =
                make_host_staged_communicator(open_shm_communicator(segment.name(), r, size),
                                              make_cuda_host_staging(*backend, 256 << 10));
            for (size_t c = 0; c < lengths.size(); ++c) {
              const int64_t n = lengths[c];
              Tensor t = gputest::make(*backend, {n}, dtype, inputs[size_t(r)][c]);
              comm->all_reduce_sum(t.data, n, dtype);
              backend->synchronize();
              outputs[size_t(r)].push_back(gputest::download(*backend, as_mat(t, n)));
            }
          } catch (...) {
            errors[size_t(r)] = std::current_exception();
          }
        });
      for (auto& t : threads) t.join();
      for (auto& e : errors)
        if (e) std::rethrow_exception(e);
      for (size_t c = 0; c < lengths.size(); ++c) {
        std::vector<float> want = inputs[0][c];
        for (int r = 1; r < size; ++r)
          for (size_t i = 0; i < want.size(); ++i) want[i] += inputs[size_t(r)][c][i];
        if (dtype == DType::kBF16)
          for (auto& x : want) x = bf16_to_f32(f32_to_bf16(x));
        for (int r = 0; r < size; ++r) {
          CAPTURE(c, r);
          CHECK(outputs[size_t(r)][c] == want);  // bit for bit, on every rank
        }
      }
    }
  }
}

TEST_CASE("host-staged all-reduce: a recorded graph sums again at every replay",
          "[gpu][tp_shared][graphs]") {
  std::atomic<int> calls{0};
  auto backend = make_cuda_backend(0);
  // 64 bytes of staging: 32 bf16 values per round trip, so 100 values are 4 host nodes.
  auto comm = make_host_staged_communicator(std::make_unique<PlusOne>(calls),
                                            make_cuda_host_staging(*backend, 64));
  const int64_t n = 100;
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) x[size_t(i)] = float(i % 17) - 8.0f;  // exact in bf16
  Tensor t = gputest::make(*backend, {n}, DType::kBF16, x);
  auto expect_plus = [&](float k) {
    backend->synchronize();
    std::vector<float> want = x;
    for (auto& v : want) v += k;
    CHECK(gputest::download(*backend, as_mat(t, n)) == want);
  };
  comm->all_reduce_sum(t.data, n, DType::kBF16);
  expect_plus(1.0f);
  CHECK(calls == 4);
  backend->begin_capture();
  comm->all_reduce_sum(t.data, n, DType::kBF16);
  auto graph = backend->end_capture();
  expect_plus(1.0f);  // recorded, not run
  CHECK(calls == 4);
  for (int k = 0; k < 3; ++k) graph->replay();
  expect_plus(4.0f);
  CHECK(calls == 16);
}

TEST_CASE("tp on one GPU: workers sharing device 0 match the CPU and the GPU at TP1",
          "[gpu][tp_shared]") {
  const fs::path pca = write_pca_transform();
  const std::vector<TpCase> cases = {
      {"mlra4", "mlra4", false, ""},
      {"mlra2", "mlra2", false, ""},
      {"mla (replicated latent)", "mla", false, ""},
      {"mla as tpla, hadamard", "mla", true, "hadamard"},
      {"mla as tpla, pca", "mla", true, pca.string()},
      {"gla2", "gla2", false, ""},
      {"gqa", "gqa", false, ""},
      {"mha", "mha", false, ""},
  };
  int runs = 0;
  for (const TpCase& c : cases) {
    INFO(c.label);
    auto cpu1 = make_local_runner(local_options(c, "cpu", 1));
    const auto steps = tp_script(cpu1->config().vocab_size, 101);
    // TPLA slices the latent by the TP degree, so its reference is the CPU at the same degree
    // (in-process ranks); TPLA has no GPU TP1 counterpart to compare with.
    const auto want_cpu1 = run_tp_script(*cpu1, steps);
    std::vector<std::vector<float>> want_gpu1;
    if (!c.tpla) {
      auto gpu1 = make_local_runner(local_options(c, "cuda", 1));
      want_gpu1 = run_tp_script(*gpu1, steps);
      check_steps(c.label + " gpu tp1 vs cpu tp1", want_gpu1, want_cpu1);
    }
    for (int tp : {2, 4, 8}) {
      if (!unsupported_tp_reason(cpu1->config(), tp).empty()) {
        std::printf("tp shared device: %s tp %d not in the variant's plan\n", c.label.c_str(), tp);
        continue;
      }
      INFO("tp " << tp);
      ProcessRunner runner(shared_options(c, tp), workers());
      const RunnerInfo info = runner.info();  // info() returns a copy: keep it alive
      for (int r = 0; r < tp; ++r) {
        const RankInfo& ready = info.ranks[size_t(r)];
        CHECK(ready.communicator == "host-staged");
        CHECK(ready.device == 0);
        CHECK(ready.cache_values_per_token_per_layer ==
              make_shard_plan(runner.config(), tp, r).cache_width);
      }
      const auto got = run_tp_script(runner, steps);
      const std::string what = c.label + " tp" + std::to_string(tp);
      if (c.tpla) {
        auto cpu_k = make_local_runner(local_options(c, "cpu", tp));
        check_steps(what + " vs cpu tp" + std::to_string(tp), got, run_tp_script(*cpu_k, steps));
      } else {
        check_steps(what + " vs cpu tp1", got, want_cpu1);
        check_steps(what + " vs gpu tp1", got, want_gpu1);
      }
      CHECK(runner.healthy());
      ++runs;
    }
  }
  CHECK(runs >= 2 * int(cases.size()));  // TP2 and TP4 fit every tiny variant's plan
  fs::remove_all(pca.parent_path());
}

TEST_CASE("tp on one GPU: ranks sharing a device split its memory fraction",
          "[gpu][tp_shared][graphs]") {
  const TpCase c{"mlra4", "mlra4", false, ""};
  RunnerConfig o = shared_options(c, 4);
  o.num_pages = 0;
  o.gpu_memory_fraction = 0.6;
  ProcessRunner runner(o, workers());
  size_t free_b = 0, total_b = 0;
  REQUIRE(cudaMemGetInfo(&free_b, &total_b) == cudaSuccess);
  // Every rank measured the device once all four had loaded, took a quarter of what the fraction
  // leaves and its own reserve: together they fill the fraction up to the four reserves.
  const double used = double(total_b - free_b);
  const double budget = 0.6 * double(total_b) - 4.0 * double(activation_reserve_bytes(
                                                          runner.config(), o.cuda_graph_max_batch));
  const double slack = double(512 << 20);
  std::printf(
      "tp shared device: 4 ranks, fraction 0.6 of %.1f GB: %lld pages, %.2f GB used, "
      "budget %.2f GB\n",
      total_b / 1e9, (long long)runner.info().num_pages, used / 1e9, budget / 1e9);
  CHECK(used <= budget + slack);
  CHECK(used >= budget - slack);
  for (const RankInfo& r : runner.info().ranks) CHECK(r.num_pages == runner.info().num_pages);

  auto cpu1 = make_local_runner(local_options(c, "cpu", 1));
  const auto steps = tp_script(cpu1->config().vocab_size, 202);
  check_steps("mlra4 tp4 gpu-sized cache vs cpu tp1", run_tp_script(runner, steps),
              run_tp_script(*cpu1, steps));
}

TEST_CASE("tp on one GPU: a killed worker fails the next step fast", "[gpu][tp_shared][fault]") {
  auto runner =
      std::make_unique<ProcessRunner>(shared_options({"mlra4", "mlra4", false, ""}, 4), workers());
  const auto steps = tp_script(runner->config().vocab_size, 303);
  std::vector<float> logits;
  runner->execute(steps[0], logits);
  const auto pids = runner->worker_pids();
  REQUIRE(pids.size() == 4);
  REQUIRE(::kill(pids[2], SIGKILL) == 0);
  const auto t0 = Clock::now();
  // The other ranks block in the host barrier of the step's first all-reduce until killed.
  CHECK_THROWS_WITH(runner->execute(steps[1], logits), Catch::Contains("rank 2"));
  CHECK(std::chrono::duration<double>(Clock::now() - t0).count() < 5.0);
  CHECK_FALSE(runner->healthy());
  CHECK_THROWS_WITH(runner->execute(steps[2], logits), Catch::Contains("not healthy"));
  for (pid_t pid : pids) CHECK(reaped(pid));
  runner.reset();
}
