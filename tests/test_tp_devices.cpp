// Ranks sharing a device, without a GPU: the host-staged all-reduce (its CPU analogue: plain
// memory staging over the shared-memory communicator) against the host sum for f32 and bf16 over
// many chunks, bf16 rounding, the communicator chosen from a device list, the per-rank share of a
// shared device's memory budget, tp_devices in the server config, and CPU workers placed by
// tp_devices (host-staged) against the in-process TP1 runner, plus a killed worker.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "engine/cache_budget.h"
#include "engine/local_runner.h"
#include "engine/process_runner.h"
#include "engine/runner_factory.h"
#include "engine/server_config.h"
#include "kernels/communicator.h"
#include "kernels/host_staged_communicator.h"
#include "kernels/shm_communicator.h"
#include "models/shard_plan.h"
#include "tp_test_script.h"

using namespace mlra;

namespace {

// Runs fn(rank, communicator) on `size` threads, each rank a host-staged communicator over one
// shared-memory segment with `staging_bytes` of staging.
template <class Fn>
void on_ranks(int size, size_t staging_bytes, Fn fn) {
  ShmSegment segment(size, 256);  // 64 floats per slot: the host sum chunks as well
  std::vector<std::exception_ptr> errors(static_cast<size_t>(size));
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r)
    threads.emplace_back([&, r] {
      try {
        auto comm = make_host_staged_communicator(open_shm_communicator(segment.name(), r, size),
                                                  make_host_memory_staging(staging_bytes));
        fn(r, *comm);
      } catch (...) {
        errors[size_t(r)] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

namespace fs = std::filesystem;

// A tiny checkpoint's runner config with rank r on devices[r] (empty: the default placement).
RunnerConfig cpu_workers(const std::string& variant, int tp, std::vector<int32_t> devices) {
  RunnerConfig o;
  o.model_dir = fs::path(MLRA_TEST_DATA) / "tiny" / variant;
  o.variant = variant;
  o.tp = tp;
  o.tp_devices = std::move(devices);
  o.page_size = testing::kTpPageSize;
  o.num_pages = testing::kTpNumPages;
  return o;
}

WorkerProcessOptions workers() {
  WorkerProcessOptions p;
  p.worker_binary = fs::path(MLRA_BINARY_DIR) / "server" / "mlra-serve";
  p.load_timeout_s = 60;
  p.step_timeout_s = 30;
  return p;
}

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

}  // namespace

TEST_CASE("host-staged all-reduce: f32 chunks equal the rank-order host sum on every rank",
          "[tp][host_staged]") {
  // 40 bytes of staging: 10 floats per round trip, so every length below spans chunk edges.
  const std::vector<int64_t> lengths = {1, 9, 10, 11, 64, 65, 777};
  for (int size : {2, 3, 4, 8}) {
    INFO("ranks " << size);
    std::mt19937 rng(uint32_t(40 + size));
    std::normal_distribution<float> nd(0, 1);
    std::vector<std::vector<std::vector<float>>> data(static_cast<size_t>(size));
    for (auto& per_rank : data)
      for (int64_t n : lengths) {
        per_rank.emplace_back(size_t(n));
        for (auto& x : per_rank.back()) x = nd(rng);
      }
    const auto inputs = data;
    on_ranks(size, 40, [&](int r, Communicator& comm) {
      if (comm.rank() != r || comm.size() != size) throw std::runtime_error("wrong rank or size");
      for (auto& buf : data[size_t(r)])
        comm.all_reduce_sum(buf.data(), int64_t(buf.size()), DType::kF32);
    });
    for (size_t c = 0; c < lengths.size(); ++c)
      for (size_t i = 0; i < size_t(lengths[c]); ++i) {
        float want = inputs[0][c][i];
        for (int r = 1; r < size; ++r) want += inputs[size_t(r)][c][i];
        for (int r = 0; r < size; ++r) REQUIRE(bits(data[size_t(r)][c][i]) == bits(want));
      }
  }
}

TEST_CASE("host-staged all-reduce: bf16 chunks are the f32 sum rounded once", "[tp][host_staged]") {
  const std::vector<int64_t> lengths = {1, 19, 20, 21, 300, 1001};
  for (int size : {2, 4}) {
    INFO("ranks " << size);
    std::mt19937 rng(uint32_t(70 + size));
    std::normal_distribution<float> nd(0, 3);
    std::vector<std::vector<std::vector<uint16_t>>> data(static_cast<size_t>(size));
    for (auto& per_rank : data)
      for (int64_t n : lengths) {
        per_rank.emplace_back(size_t(n));
        for (auto& x : per_rank.back()) x = f32_to_bf16(nd(rng));
      }
    const auto inputs = data;
    // 40 bytes of staging: 20 bf16 values per round trip.
    on_ranks(size, 40, [&](int r, Communicator& comm) {
      for (auto& buf : data[size_t(r)])
        comm.all_reduce_sum(buf.data(), int64_t(buf.size()), DType::kBF16);
    });
    for (size_t c = 0; c < lengths.size(); ++c)
      for (size_t i = 0; i < size_t(lengths[c]); ++i) {
        float sum = bf16_to_f32(inputs[0][c][i]);
        for (int r = 1; r < size; ++r) sum += bf16_to_f32(inputs[size_t(r)][c][i]);
        for (int r = 0; r < size; ++r) REQUIRE(data[size_t(r)][c][i] == f32_to_bf16(sum));
      }
  }
}

TEST_CASE("host-staged all-reduce: refuses what it cannot sum", "[tp][host_staged]") {
  ShmSegment segment(1, 256);
  auto comm = make_host_staged_communicator(open_shm_communicator(segment.name(), 0, 1),
                                            make_host_memory_staging(64));
  std::vector<uint16_t> half(4);
  CHECK_THROWS_WITH(comm->all_reduce_sum(half.data(), 4, DType::kF16),
                    Catch::Contains("f32 and bf16 only"));
  std::vector<float> f = {1.5f, -2.0f, 3.25f, 0.0f};
  CHECK_THROWS_AS(comm->all_reduce_sum(f.data(), -1, DType::kF32), std::invalid_argument);
  comm->all_reduce_sum(f.data(), 4, DType::kF32);  // one rank: the sum is the buffer itself
  CHECK(f == std::vector<float>{1.5f, -2.0f, 3.25f, 0.0f});
  CHECK_THROWS_WITH(make_host_staged_communicator(open_shm_communicator(segment.name(), 0, 1),
                                                  make_host_memory_staging(2)),
                    Catch::Contains("holds no element"));
  CHECK_THROWS_AS(make_host_staged_communicator(nullptr, make_host_memory_staging()),
                  std::invalid_argument);
}

TEST_CASE("bf16 conversion rounds to nearest even and keeps NaN and infinities",
          "[tp][host_staged]") {
  CHECK(f32_to_bf16(1.0f) == 0x3f80);
  CHECK(bf16_to_f32(0x3f80) == 1.0f);
  // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1).
  CHECK(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)) == 0x3f80);
  // 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 (odd) and 1 + 2^-6: up to the even one.
  CHECK(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)) == 0x3f82);
  CHECK(f32_to_bf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)) == 0x3f81);
  CHECK(f32_to_bf16(-2.5f) == 0xc020);
  CHECK(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  CHECK(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::infinity())) ==
        std::numeric_limits<float>::infinity());
  CHECK(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::max())) ==
        std::numeric_limits<float>::infinity());  // rounds past the largest bf16
}

TEST_CASE("device lists choose the communicator and each rank's share of its device",
          "[tp][tp_devices]") {
  CHECK(tp_device_list({}, 0, 4) == std::vector<int32_t>{0, 1, 2, 3});
  CHECK(tp_device_list({}, 2, 2) == std::vector<int32_t>{2, 3});
  CHECK(tp_device_list({0, 0, 0, 0}, 5, 4) == std::vector<int32_t>{0, 0, 0, 0});
  CHECK_THROWS_WITH(tp_device_list({0, 0}, 0, 4), Catch::Contains("one device per rank"));
  CHECK_THROWS_WITH(tp_device_list({0, -1}, 0, 2), Catch::Contains("tp_devices[1]"));
  CHECK_THROWS_AS(tp_device_list({}, -1, 2), std::invalid_argument);
  CHECK_THROWS_AS(tp_device_list({}, 0, 0), std::invalid_argument);

  using K = CommunicatorKind;
  CHECK(communicator_kind(DeviceKind::kCuda, {3}) == K::kSingleRank);
  CHECK(communicator_kind(DeviceKind::kCuda, {0, 1, 2, 3}) == K::kNccl);
  CHECK(communicator_kind(DeviceKind::kCuda, {0, 0, 0, 0}) == K::kHostStaged);
  CHECK(communicator_kind(DeviceKind::kCuda, {0, 1, 1, 2}) == K::kHostStaged);  // one pair shared
  CHECK(communicator_kind(DeviceKind::kCpu, {0, 1}) == K::kSharedMemory);
  CHECK(communicator_kind(DeviceKind::kCpu, {0, 0}) == K::kHostStaged);
  CHECK(std::string(communicator_kind_name(K::kHostStaged)) == "host-staged");

  const std::vector<int32_t> devices = {0, 0, 1, 0, 2, 2};
  CHECK(ranks_sharing_device(devices, 0) == 3);
  CHECK(ranks_sharing_device(devices, 2) == 1);
  CHECK(ranks_sharing_device(devices, 5) == 2);
  CHECK_THROWS_AS(ranks_sharing_device(devices, 6), std::invalid_argument);
}

TEST_CASE("ranks sharing a device split the fraction of it the server may use",
          "[tp][tp_devices]") {
  const DeviceMemory m{72'000'000'000, 80'000'000'000};  // 8 GB already used
  const int64_t reserve = 1'000'000'000;
  // 0.85 of 80 GB is 68 GB; 60 GB of it free, 15 GB per rank of four, less each one's reserve.
  CHECK(gpu_cache_bytes(m, 0.85, reserve) == 59'000'000'000);
  CHECK(gpu_cache_bytes(m, 0.85, reserve, 4) == 14'000'000'000);
  CHECK(gpu_cache_bytes(m, 0.05, reserve, 4) < 0);  // the fraction is spent already
  CHECK_THROWS_AS(gpu_cache_bytes(m, 0.85, reserve, 0), std::invalid_argument);
  // 14 GB per rank at 1000 bytes per token, pages of 1000 tokens: 14000 fit, one kept back.
  CHECK(gpu_cache_pages(m, 0.85, reserve, 1000, 1000, 4) == 13999);
  CHECK(gpu_cache_pages(m, 0.85, reserve, 1000, 1000) == 58999);
}

TEST_CASE("tp_devices in the server config: one device per rank", "[tp][tp_devices]") {
  using nlohmann::json;
  const fs::path base = "/base";
  const ServerConfig c =
      parse_server_config(json{{"model_dir", "m"}, {"tp", 4}, {"tp_devices", {0, 0, 0, 0}}}, base);
  CHECK(c.runner.tp_devices == std::vector<int32_t>{0, 0, 0, 0});
  CHECK(to_json(c)["tp_devices"] == json({0, 0, 0, 0}));
  CHECK(runner_config_from_json(to_json(c.runner), base) == c.runner);  // the workers' copy
  CHECK(rank_devices(c.runner) == std::vector<int32_t>{0, 0, 0, 0});
  CHECK(rank_communicator(c.runner) == CommunicatorKind::kHostStaged);
  const ServerConfig d =
      parse_server_config(json{{"model_dir", "m"}, {"tp", 2}, {"device", 3}}, base);
  CHECK(d.runner.tp_devices.empty());
  CHECK(rank_devices(d.runner) == std::vector<int32_t>{3, 4});
  CHECK(rank_device(d.runner, 1) == 4);
  CHECK(rank_communicator(d.runner) == CommunicatorKind::kSharedMemory);
  // tp and tp_devices may come as two overrides in either order: the count is checked where
  // the runner starts.
  const ServerConfig short_list =
      parse_server_config(json{{"model_dir", "m"}, {"tp", 4}, {"tp_devices", {0, 0}}}, base);
  CHECK_THROWS_WITH(rank_devices(short_list.runner),
                    Catch::Contains("tp_devices") && Catch::Contains("one device per rank"));
  CHECK_THROWS_WITH(
      parse_server_config(json{{"model_dir", "m"}, {"tp", 2}, {"tp_devices", {0, -1}}}, base),
      Catch::Contains("tp_devices") && Catch::Contains(">= 0"));
  for (const json& bad :
       {json("0,0"), json({0.5, 1}), json({"0", "1"}), json({int64_t(1) << 40, 0})})
    CHECK_THROWS_WITH(
        parse_server_config(json{{"model_dir", "m"}, {"tp", 2}, {"tp_devices", bad}}, base),
        Catch::Contains("tp_devices"));
  ServerConfig o = c;
  apply_config_override(o, "tp_devices=[1,1,0,0]");
  CHECK(o.runner.tp_devices == std::vector<int32_t>{1, 1, 0, 0});
  CHECK(rank_device(o.runner, 2) == 0);
  ServerConfig two = parse_server_config(json{{"model_dir", "m"}}, base);
  apply_config_override(two, "tp_devices=[0,0]");  // before tp: no error yet
  apply_config_override(two, "tp=2");
  CHECK(rank_devices(two.runner) == std::vector<int32_t>{0, 0});
}

TEST_CASE("CPU workers sharing a device sum host-staged and match the TP1 runner",
          "[tp][tp_devices]") {
  struct Case {
    std::string variant;
    bool tpla = false;
  };
  const std::vector<Case> cases = {{"mlra4"}, {"mlra2"}, {"mla"}, {"mla", true},
                                   {"gla2"},  {"gqa"},   {"mha"}};
  int runs = 0;
  for (const Case& c : cases) {
    RunnerConfig one = cpu_workers(c.variant, 1, {});
    if (c.tpla) one.mla_tp_mode = LatentTpMode::kTpla;  // one slice: exact MLA
    auto reference = make_runner(one, workers());
    const auto steps = testing::tp_script(reference->config().vocab_size, 17);
    const auto want = testing::run_tp_script(*reference, steps);
    for (int tp : {2, 4, 8}) {
      if (!unsupported_tp_reason(reference->config(), tp).empty()) continue;
      INFO(c.variant << (c.tpla ? " tpla" : "") << " tp " << tp);
      RunnerConfig o = cpu_workers(c.variant, tp, std::vector<int32_t>(size_t(tp), 0));
      o.mla_tp_mode = one.mla_tp_mode;
      ProcessRunner runner(o, workers());
      for (const RankInfo& r : runner.info().ranks) {
        CHECK(r.communicator == "host-staged");
        CHECK(r.device == 0);
      }
      std::vector<std::vector<float>> expect = want;
      if (c.tpla)  // sliced TPLA is not TP1 math: its reference is in-process at the same TP
        expect = testing::run_tp_script(*make_local_runner(o), steps);
      const auto got = testing::run_tp_script(runner, steps);
      for (size_t i = 0; i < steps.size(); ++i) {
        INFO("step " << i);
        REQUIRE(got[i].size() == expect[i].size());
        CHECK(testing::rel_l2(got[i], expect[i]) < 1e-5);
      }
      ++runs;
    }
  }
  CHECK(runs >= 2 * int(cases.size()));  // TP2 and TP4 fit every tiny variant's plan
}

TEST_CASE("CPU workers: distinct devices keep the shared-memory sum, a bad list is refused",
          "[tp][tp_devices]") {
  ProcessRunner distinct(cpu_workers("mlra4", 2, {3, 5}), workers());
  CHECK(distinct.info().ranks[1].device == 5);
  for (const RankInfo& r : distinct.info().ranks) CHECK(r.communicator == "shared-memory");
  ProcessRunner placed_by_default(cpu_workers("mlra4", 2, {}), workers());
  for (const RankInfo& r : placed_by_default.info().ranks) CHECK(r.communicator == "shared-memory");
  // One pair shares a device: every rank sums host-staged.
  ProcessRunner mixed(cpu_workers("mlra4", 4, {0, 0, 1, 2}), workers());
  for (const RankInfo& r : mixed.info().ranks) CHECK(r.communicator == "host-staged");
  CHECK_THROWS_WITH(ProcessRunner(cpu_workers("mlra4", 2, {0}), workers()),
                    Catch::Contains("tp_devices") && Catch::Contains("one device per rank"));
  CHECK_THROWS_WITH(make_runner(cpu_workers("mlra4", 1, {0, 0}), workers()),
                    Catch::Contains("tp_devices") && Catch::Contains("one device per rank"));
}

TEST_CASE("CPU workers sharing a device: a killed worker fails the next step fast",
          "[tp][tp_devices][fault]") {
  auto runner = std::make_unique<ProcessRunner>(cpu_workers("mlra4", 4, {0, 0, 0, 0}), workers());
  const auto steps = testing::tp_script(runner->config().vocab_size, 23);
  std::vector<float> logits;
  runner->execute(steps[0], logits);
  const auto pids = runner->worker_pids();
  REQUIRE(pids.size() == 4);
  REQUIRE(::kill(pids[2], SIGKILL) == 0);
  const auto t0 = Clock::now();
  // The other ranks block in the shared-memory barrier of the step's first all-reduce.
  CHECK_THROWS_WITH(runner->execute(steps[1], logits), Catch::Contains("rank 2"));
  CHECK(std::chrono::duration<double>(Clock::now() - t0).count() < 5.0);
  CHECK_FALSE(runner->healthy());
  for (pid_t pid : pids) {
    int status = 0;
    CHECK((::waitpid(pid, &status, WNOHANG) < 0 && errno == ECHILD));
  }
}
