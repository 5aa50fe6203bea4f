// Multi-process TP runtime: control-channel framing and lockstep checks, the shared-memory
// all-reduce against a host sum, ProcessRunner logits against the in-process TP=1 runner for every
// tiny variant at TP 2 and 4, per-rank cache widths against the shard plan, fault handling
// (killed or stopped worker -> RunnerError fast, unhealthy, no zombies, prompt destructor), and
// the one runner configuration: sent whole in Init, placing rank r on device + r, and set up by
// the same rank code in threads and in worker processes.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "engine/control_channel.h"
#include "engine/local_runner.h"
#include "engine/process_runner.h"
#include "engine/runner_factory.h"
#include "engine/server_config.h"
#include "kernels/shm_communicator.h"
#include "models/shard_plan.h"
#include "step_builder.h"

using namespace mlra;
namespace fs = std::filesystem;

namespace {

constexpr int32_t kPageSize = 8;
constexpr int32_t kPagesPerSeq = 8;

std::vector<fs::path> tiny_models() {
  std::vector<fs::path> dirs;
  const fs::path root = fs::path(MLRA_TEST_DATA) / "tiny";
  if (fs::is_directory(root))
    for (const auto& e : fs::directory_iterator(root))
      if (fs::exists(e.path() / "config.json")) dirs.push_back(e.path());
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

RunnerConfig tiny_options(const fs::path& dir, int tp) {
  RunnerConfig o;
  o.model_dir = dir;
  o.variant = dir.filename().string();
  o.tp = tp;
  o.page_size = kPageSize;
  o.num_pages = 3 * kPagesPerSeq;
  return o;
}

WorkerProcessOptions workers() {
  WorkerProcessOptions p;
  p.worker_binary = fs::path(MLRA_BINARY_DIR) / "server" / "mlra-serve";
  p.load_timeout_s = 60;
  p.step_timeout_s = 30;
  return p;
}

std::vector<int32_t> random_tokens(std::mt19937& rng, int n, int vocab) {
  std::uniform_int_distribution<int32_t> d(0, vocab - 1);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = d(rng);
  return t;
}

// A prefill of two sequences (one with all logits) then `decodes` decode steps of both.
std::vector<StepBatch> script(std::mt19937& rng, int vocab, int decodes) {
  using testing::SeqChunk;
  std::vector<StepBatch> steps;
  const int len0 = 11, len1 = 19;
  steps.push_back(testing::build_step({SeqChunk{0, 0, random_tokens(rng, len0, vocab), true},
                                       SeqChunk{1, 0, random_tokens(rng, len1, vocab), false}},
                                      kPageSize, kPagesPerSeq));
  for (int k = 0; k < decodes; ++k)
    steps.push_back(testing::build_step({SeqChunk{0, len0 + k, random_tokens(rng, 1, vocab)},
                                         SeqChunk{1, len1 + k, random_tokens(rng, 1, vocab)}},
                                        kPageSize, kPagesPerSeq));
  for (size_t i = 0; i < steps.size(); ++i) steps[i].step = int64_t(i);
  return steps;
}

bool reaped(pid_t pid) {
  int status = 0;
  return ::waitpid(pid, &status, WNOHANG) < 0 && errno == ECHILD;
}

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

}  // namespace

TEST_CASE("control channel: StepBatch encoding round-trips", "[tp][channel]") {
  std::mt19937 rng(7);
  const StepBatch s = script(rng, 300, 1)[0];
  const StepBatch d = decode_step_batch(encode(s));
  CHECK(d.step == s.step);
  CHECK(d.tokens == s.tokens);
  CHECK(d.positions == s.positions);
  CHECK(d.token_seq == s.token_seq);
  CHECK(d.slots == s.slots);
  CHECK(d.page_indptr == s.page_indptr);
  CHECK(d.page_indices == s.page_indices);
  CHECK(d.logit_rows == s.logit_rows);
  std::vector<char> truncated = encode(s);
  truncated.pop_back();
  CHECK_THROWS_AS(decode_step_batch(truncated), ProtocolError);
}

TEST_CASE("control channel: framing, lockstep, EOF and timeout", "[tp][channel]") {
  auto [a_fd, b_fd] = make_socket_pair();
  ControlChannel a(a_fd), b(b_fd);
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> big(3'000'000);  // 12 MB: far larger than the socket buffer
  for (auto& x : big) x = u(rng);
  std::thread sender([&] {
    a.send(MessageType::kLogits, 5, big.data(), big.size() * sizeof(float));
    a.send(MessageType::kAck, 6, nullptr, 0);
  });
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  const MessageHeader h = b.expect_header(deadline, 5, MessageType::kLogits, MessageType::kAck);
  std::vector<float> got(h.payload_size / sizeof(float));
  b.read_payload(got.data(), h.payload_size, deadline);
  sender.join();
  CHECK(got == big);
  CHECK_THROWS_AS(b.expect(deadline, 7, MessageType::kAck, MessageType::kAck), ProtocolError);

  const auto t0 = Clock::now();
  CHECK_THROWS_AS(b.receive(Clock::now() + std::chrono::milliseconds(100)), ChannelTimeout);
  CHECK(seconds_since(t0) < 2.0);
  const std::string text = "boom";
  a.send(MessageType::kError, 8, text.data(), text.size());
  CHECK_THROWS_WITH(b.expect(deadline, 8, MessageType::kAck, MessageType::kAck), "boom");
  a.close();
  CHECK_THROWS_AS(b.receive(deadline), ChannelClosed);
  CHECK_THROWS_AS(b.send(MessageType::kAck, 9, nullptr, 0), ChannelClosed);  // no SIGPIPE
}

TEST_CASE("shm communicator: chunked all-reduce equals the host sum on every rank", "[tp][shm]") {
  for (int size : {2, 3, 4}) {
    ShmSegment segment(size, 256);  // 64 floats per slot: every buffer below is chunked
    std::mt19937 rng(100 + size);
    std::normal_distribution<float> nd(0, 1);
    const std::vector<int64_t> lengths = {1, 64, 65, 1000, 777};
    std::vector<std::vector<std::vector<float>>> data(
        static_cast<size_t>(size));  // [rank][call][i]
    for (auto& per_rank : data)
      for (int64_t n : lengths) {
        per_rank.emplace_back(size_t(n));
        for (auto& x : per_rank.back()) x = nd(rng);
      }
    auto inputs = data;
    std::vector<std::thread> threads;
    for (int r = 0; r < size; ++r)
      threads.emplace_back([&, r] {
        auto comm = open_shm_communicator(segment.name(), r, size);
        for (auto& buf : data[size_t(r)])
          comm->all_reduce_sum(buf.data(), int64_t(buf.size()), DType::kF32);
      });
    for (auto& t : threads) t.join();
    for (size_t c = 0; c < lengths.size(); ++c)
      for (int64_t i = 0; i < lengths[c]; ++i) {
        double expect = 0;
        for (int r = 0; r < size; ++r) expect += inputs[size_t(r)][c][size_t(i)];
        for (int r = 0; r < size; ++r) {
          REQUIRE(data[size_t(r)][c][size_t(i)] == Approx(expect).margin(1e-5));
          REQUIRE(data[size_t(r)][c][size_t(i)] == data[0][c][size_t(i)]);  // bit-identical
        }
      }
  }
  CHECK_THROWS_AS(open_shm_communicator("/mlra-does-not-exist", 0, 2), ShmError);
}

TEST_CASE("process runner: TP logits equal the TP=1 in-process runner", "[tp]") {
  const auto models = tiny_models();
  REQUIRE(!models.empty());
  for (const fs::path& dir : models) {
    const RunnerConfig base = tiny_options(dir, 1);
    auto reference = make_runner(base);
    const ModelConfig& config = reference->config();
    std::mt19937 rng(std::hash<std::string>{}(dir.filename().string()) % 100000);
    const auto steps = script(rng, int(config.vocab_size), 3);
    std::vector<std::vector<float>> want(steps.size());
    for (size_t i = 0; i < steps.size(); ++i) {
      reference->execute(steps[i], want[i]);
      REQUIRE(want[i].size() == steps[i].logit_rows.size() * size_t(config.vocab_size));
    }
    for (int tp : {2, 4}) {
      if (!unsupported_tp_reason(config, tp).empty()) continue;
      INFO(dir.filename().string() << " tp=" << tp);
      ProcessRunner runner(tiny_options(dir, tp), workers());
      CHECK(runner.healthy());
      const RunnerInfo info = runner.info();
      CHECK(info.tp == tp);
      REQUIRE(info.ranks.size() == size_t(tp));
      int64_t widest = 0;
      for (int r = 0; r < tp; ++r) {
        const RankInfo& rank = info.ranks[size_t(r)];
        const int64_t width = make_shard_plan(config, tp, r).cache_width;
        CHECK(rank.rank == r);
        CHECK(rank.cache_values_per_token_per_layer == width);
        CHECK(rank.cache_bytes_per_token == width * config.n_layer * int64_t(sizeof(float)));
        CHECK(rank.weight_bytes > 0);
        CHECK(rank.num_pages == 3 * kPagesPerSeq);
        widest = std::max(widest, width);
      }
      CHECK(info.cache_values_per_token_per_layer == widest);
      CHECK(info.num_pages == 3 * kPagesPerSeq);
      for (size_t i = 0; i < steps.size(); ++i) {
        std::vector<float> got;
        runner.execute(steps[i], got);
        REQUIRE(got.size() == want[i].size());
        CHECK(testing::rel_l2(got, want[i]) < 1e-5);
      }
    }
  }
}

TEST_CASE("process runner: refuses a TP degree the variant cannot take", "[tp]") {
  const auto models = tiny_models();
  REQUIRE(!models.empty());
  RunnerConfig o = tiny_options(models.front(), 5);  // 24 heads: 5 never divides
  CHECK_THROWS_AS(ProcessRunner(o, workers()), RunnerError);
}

TEST_CASE("process runner: a killed worker fails the next step fast", "[tp][fault]") {
  const auto models = tiny_models();
  REQUIRE(!models.empty());
  const fs::path dir = models.front();
  std::mt19937 rng(3);
  auto runner = std::make_unique<ProcessRunner>(tiny_options(dir, 2), workers());
  const auto steps = script(rng, int(runner->config().vocab_size), 2);
  std::vector<float> logits;
  runner->execute(steps[0], logits);
  const auto pids = runner->worker_pids();
  REQUIRE(pids.size() == 2);
  REQUIRE(::kill(pids[1], SIGKILL) == 0);
  const auto t0 = Clock::now();
  CHECK_THROWS_WITH(runner->execute(steps[1], logits), Catch::Contains("rank 1"));
  CHECK(seconds_since(t0) < 5.0);
  CHECK_FALSE(runner->healthy());
  CHECK_THROWS_WITH(runner->execute(steps[2], logits), Catch::Contains("not healthy"));
  for (pid_t pid : pids) CHECK(reaped(pid));
  const auto t1 = Clock::now();
  runner.reset();
  CHECK(seconds_since(t1) < 2.0);
}

TEST_CASE("process runner: health turns false when an idle worker dies", "[tp][fault]") {
  const auto models = tiny_models();
  REQUIRE(!models.empty());
  ProcessRunner runner(tiny_options(models.front(), 2), workers());
  REQUIRE(runner.healthy());
  const pid_t victim = runner.worker_pids()[0];
  REQUIRE(::kill(victim, SIGKILL) == 0);
  const auto t0 = Clock::now();
  while (runner.healthy() && seconds_since(t0) < 5.0)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CHECK_FALSE(runner.healthy());
}

TEST_CASE("process runner: a hung worker times out and everything is reaped", "[tp][fault]") {
  const auto models = tiny_models();
  REQUIRE(!models.empty());
  WorkerProcessOptions quick = workers();
  quick.step_timeout_s = 0.5;
  auto runner = std::make_unique<ProcessRunner>(tiny_options(models.front(), 2), quick);
  std::mt19937 rng(5);
  const auto steps = script(rng, int(runner->config().vocab_size), 1);
  const auto pids = runner->worker_pids();
  REQUIRE(::kill(pids[1], SIGSTOP) == 0);  // alive but never answers
  std::vector<float> logits;
  const auto t0 = Clock::now();
  CHECK_THROWS_WITH(runner->execute(steps[0], logits), Catch::Contains("hung"));
  CHECK(seconds_since(t0) < 3.0);
  CHECK_FALSE(runner->healthy());
  for (pid_t pid : pids) CHECK(reaped(pid));
  runner.reset();
}

TEST_CASE("process runner: orderly shutdown reaps every worker", "[tp][fault]") {
  const auto models = tiny_models();
  REQUIRE(!models.empty());
  auto runner = std::make_unique<ProcessRunner>(tiny_options(models.front(), 2), workers());
  const auto pids = runner->worker_pids();
  const auto t0 = Clock::now();
  runner.reset();
  CHECK(seconds_since(t0) < 2.0);
  for (pid_t pid : pids) CHECK(reaped(pid));
}

TEST_CASE("process runner: workers take the latent prefill form", "[tp][latent_prefill]") {
  const fs::path dir = fs::path(MLRA_TEST_DATA) / "tiny" / "mla";
  REQUIRE(fs::exists(dir / "config.json"));
  RunnerConfig o = tiny_options(dir, 2);
  o.latent_prefill.mode = LatentPrefill::kExpanded;
  RunnerConfig absorbed = o;
  absorbed.latent_prefill.mode = LatentPrefill::kAbsorbed;
  auto reference = make_local_runner(o);
  auto absorbed_runner = make_local_runner(absorbed);
  ProcessRunner runner(o, workers());
  std::mt19937 rng(31);
  double from_absorbed = 0.0;
  for (const StepBatch& step : script(rng, int(runner.config().vocab_size), 2)) {
    std::vector<float> want, got, other;
    reference->execute(step, want);
    runner.execute(step, got);
    absorbed_runner->execute(step, other);
    REQUIRE(!want.empty());
    CHECK(testing::rel_l2(got, want) < 1e-6);
    from_absorbed = std::max(from_absorbed, testing::rel_l2(got, other));
  }
  // The workers ran the expanded form: the same logits up to f32 summation order.
  CHECK(from_absorbed > 0.0);
  CHECK(from_absorbed < 1e-5);
}

TEST_CASE("process runner: MLA with TPLA equals the in-process TPLA runner", "[tp]") {
  const fs::path dir = fs::path(MLRA_TEST_DATA) / "tiny" / "mla";
  REQUIRE(fs::exists(dir / "config.json"));
  RunnerConfig o = tiny_options(dir, 2);
  o.mla_tp_mode = LatentTpMode::kTpla;
  auto reference = make_local_runner(o);
  ProcessRunner runner(o, workers());
  std::mt19937 rng(29);
  for (const StepBatch& step : script(rng, int(runner.config().vocab_size), 2)) {
    std::vector<float> want, got;
    reference->execute(step, want);
    runner.execute(step, got);
    REQUIRE(!want.empty());
    CHECK(testing::rel_l2(got, want) < 1e-6);
  }
  for (int r = 0; r < 2; ++r)
    CHECK(runner.info().ranks[size_t(r)].cache_values_per_token_per_layer ==
          make_shard_plan(runner.config(), 2, r).cache_width);
}

TEST_CASE("process runner: a worker that cannot start fails construction", "[tp][fault]") {
  const auto models = tiny_models();
  REQUIRE(!models.empty());
  WorkerProcessOptions missing = workers();
  missing.worker_binary = "/nonexistent/mlra-serve";
  const auto t0 = Clock::now();
  CHECK_THROWS_WITH(ProcessRunner(tiny_options(models.front(), 2), missing),
                    Catch::Contains("status 127"));
  CHECK(seconds_since(t0) < 5.0);
}

TEST_CASE("runner config: rank r is given device + r on both runners", "[tp][config]") {
  const fs::path dir = fs::path(MLRA_TEST_DATA) / "tiny" / "mlra4";
  REQUIRE(fs::exists(dir / "config.json"));
  // From the config file's keys, as `serve` reads them.
  const nlohmann::json file = {
      {"model_dir", dir.string()}, {"variant", "mlra4"}, {"device", 3}, {"page_size", kPageSize}};
  ServerConfig server = parse_server_config(file, "/");
  CHECK(server.runner.device == 3);
  auto single = make_runner(server.runner);
  REQUIRE(single->info().ranks.size() == 1);
  CHECK(single->info().ranks[0].device == 3);

  apply_config_override(server, "tp=2");
  apply_config_override(server, "device=5");
  auto threads = make_local_runner(server.runner);
  ProcessRunner processes(server.runner, workers());
  for (const ModelRunner* runner : {static_cast<const ModelRunner*>(threads.get()),
                                    static_cast<const ModelRunner*>(&processes)}) {
    const RunnerInfo info = runner->info();
    REQUIRE(info.ranks.size() == 2);
    CHECK(info.ranks[0].device == 5);
    CHECK(info.ranks[1].device == 6);
  }
  // The workers report their own pids: they really are other processes.
  CHECK(processes.info().ranks[1].pid == int64_t(processes.worker_pids()[1]));
}

TEST_CASE("rank setup: in-process and worker ranks report the same shards", "[tp][config]") {
  for (const char* v : {"mla", "gqa", "mlra4"}) {
    const fs::path dir = fs::path(MLRA_TEST_DATA) / "tiny" / v;
    REQUIRE(fs::exists(dir / "config.json"));
    RunnerConfig o = tiny_options(dir, 2);
    o.num_pages = 0;  // both derive the count from the byte budget
    o.cache_memory_bytes = 1 << 20;
    auto threads = make_local_runner(o);
    ProcessRunner processes(o, workers());
    const RunnerInfo a = threads->info(), b = processes.info();
    INFO(v);
    CHECK(a.num_pages > 0);
    CHECK(a.num_pages == b.num_pages);
    CHECK(a.max_context == b.max_context);
    CHECK(a.cache_bytes_per_token == b.cache_bytes_per_token);
    CHECK(a.weight_bytes_per_rank == b.weight_bytes_per_rank);
    REQUIRE(a.ranks.size() == b.ranks.size());
    for (size_t r = 0; r < a.ranks.size(); ++r) {
      CHECK(a.ranks[r].rank == b.ranks[r].rank);
      CHECK(a.ranks[r].backend == b.ranks[r].backend);
      CHECK(a.ranks[r].weight_bytes == b.ranks[r].weight_bytes);
      CHECK(a.ranks[r].cache_bytes_per_token == b.ranks[r].cache_bytes_per_token);
      CHECK(a.ranks[r].cache_values_per_token_per_layer ==
            b.ranks[r].cache_values_per_token_per_layer);
      CHECK(a.ranks[r].num_pages == a.num_pages);
    }
  }
}

TEST_CASE("control channel: Init carries the runner config whole", "[tp][channel][config]") {
  WorkerInit init;
  RunnerConfig& c = init.config;
  c.model_dir = "/models/x";
  c.variant = "mla_gated";
  c.backend = "cuda";
  c.tp = 4;
  c.device = 2;
  c.mla_tp_mode = LatentTpMode::kTpla;
  c.tpla = TplaOptions{"/t/pca.tpla", false, 0xfeedbeefcafe1234ULL, 2};
  c.latent_prefill = LatentPrefillOptions{LatentPrefill::kExpanded, 12345};
  c.page_size = 32;
  c.cache_memory_bytes = 777;
  c.num_pages = 99;
  c.gpu_memory_fraction = 0.5;
  c.cuda_graph_max_batch = 17;
  c.max_context = 4096;
  init.shm_name = "/mlra-shm-test";
  const WorkerInit back = decode_worker_init(encode(init));
  CHECK(back.config == init.config);
  CHECK(back.shm_name == init.shm_name);
  CHECK_FALSE(RunnerConfig{} == init.config);  // every field above differs from its default

  // A payload a worker cannot trust is a protocol error naming what is wrong.
  auto with_json = [&](const std::string& json) {
    ByteWriter w;
    w.put_string(json);
    w.put_string(std::string("/shm"));
    return w.bytes();
  };
  CHECK_THROWS_WITH(decode_worker_init(with_json("{not json")), Catch::Contains("not JSON"));
  CHECK_THROWS_WITH(decode_worker_init(with_json(R"({"model_dir": "/m", "bogus": 1})")),
                    Catch::Contains("'bogus'"));
  CHECK_THROWS_WITH(decode_worker_init(with_json(R"({"model_dir": "/m", "device": -1})")),
                    Catch::Contains("'device'"));
  std::vector<char> trailing = encode(init);
  trailing.push_back(0);
  CHECK_THROWS_AS(decode_worker_init(trailing), ProtocolError);
}
