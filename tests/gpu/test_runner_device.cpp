// The runner config's `device` reaches the CUDA backend: rank r of a runner runs on device + r,
// and a device the machine does not have is refused when the rank is set up.
#include <cuda_runtime.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "../step_builder.h"
#include "engine/local_runner.h"
#include "engine/process_runner.h"
#include "gpu_test_util.h"

using namespace mlra;
using mlra::gputest::gpu_count;
namespace fs = std::filesystem;

namespace {

RunnerConfig tiny_cuda(int device) {
  RunnerConfig o;
  o.model_dir = fs::path(MLRA_TEST_DATA) / "tiny" / "mlra4";
  o.variant = "mlra4";
  o.backend = "cuda";
  o.device = device;
  o.page_size = 16;
  o.num_pages = 16;
  o.cuda_graph_max_batch = 0;
  return o;
}

// The CUDA backend names itself "cuda:<ordinal> (<GPU name>)".
bool on_device(const RankInfo& r, int device) {
  return r.backend.rfind("cuda:" + std::to_string(device) + " ", 0) == 0;
}

}  // namespace

TEST_CASE("runner config: the device key picks the GPU of the in-process runner", "[gpu][config]") {
  const int gpus = gpu_count();
  REQUIRE(gpus >= 1);
  const int last = gpus - 1;
  auto runner = make_local_runner(tiny_cuda(last));
  REQUIRE(runner->info().ranks.size() == 1);
  CHECK(runner->info().ranks[0].device == last);
  CAPTURE(runner->info().ranks[0].backend);
  CHECK(on_device(runner->info().ranks[0], last));
  std::vector<float> logits;
  runner->execute(testing::build_step({{0, 0, {1, 2, 3, 4, 5}, true}}, 16, 4), logits);
  CHECK(logits.size() == size_t(5 * runner->config().vocab_size));
  runner.reset();

  // One past the last device: the rank's backend refuses it instead of running elsewhere.
  CHECK_THROWS(make_local_runner(tiny_cuda(gpus)));
  cudaGetLastError();  // the refused device's error must not reach later launch checks
}

TEST_CASE("runner config: worker rank r runs on device + r", "[gpu][config][nccl]") {
  const int gpus = gpu_count();
  if (gpus < 3) {
    WARN("fewer than 3 GPUs: the device offset of TP workers is not tested");
    return;
  }
  RunnerConfig o = tiny_cuda(1);
  o.tp = 2;
  WorkerProcessOptions workers;
  // mlra_gpu_tests lives in <build>/tests, mlra-serve in <build>/server.
  workers.worker_binary =
      fs::read_symlink("/proc/self/exe").parent_path().parent_path() / "server" / "mlra-serve";
  workers.load_timeout_s = 120;
  ProcessRunner runner(o, workers);
  const RunnerInfo info = runner.info();
  REQUIRE(info.ranks.size() == 2);
  for (int r = 0; r < 2; ++r) {
    CAPTURE(r, info.ranks[size_t(r)].backend);
    CHECK(info.ranks[size_t(r)].device == 1 + r);
    CHECK(on_device(info.ranks[size_t(r)], 1 + r));
  }
}
