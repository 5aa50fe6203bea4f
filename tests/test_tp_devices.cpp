// Ranks sharing a device, without a GPU: the host-staged all-reduce (its CPU analogue: plain
// memory staging over the shared-memory communicator) against the host sum for f32 and bf16 over
// many chunks, bf16 rounding, the communicator chosen from a device list, and the per-rank share
// of a shared device's memory budget.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <thread>

#include "kernels/communicator.h"
#include "kernels/host_staged_communicator.h"
#include "kernels/shm_communicator.h"
#include "models/local_runner.h"

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
