// Engine metrics hooks ([engine][metrics]) on the tiny MLRA-4 CPU runner: for random prompt and
// output lengths, the reported samples are counted exactly (one TTFT and G-1 inter-token gaps
// per request, one queue time, one finish) and the decode cache bytes equal the closed form
// sum over requests of sum_{k=1}^{G-1} (P + k) x cache bytes per token per rank.
#include <catch2/catch.hpp>

#include <condition_variable>
#include <mutex>
#include <random>

#include "engine/engine.h"
#include "grpc_test_server.h"

using namespace mlra;
using namespace mlra::testing;
using namespace std::chrono_literals;

namespace {

// Records everything the engine reports (engine thread) for the test thread to read after.
class RecordingMetrics : public EngineMetrics {
 public:
  void on_step(const StepMetrics& s) override {
    std::lock_guard lock(mu);
    ++steps;
    decode_bytes += s.decode_cache_bytes_read_per_rank;
    tokens += s.num_tokens;
    ttft.insert(ttft.end(), s.time_to_first_token_s.begin(), s.time_to_first_token_s.end());
    itl.insert(itl.end(), s.inter_token_latency_s.begin(), s.inter_token_latency_s.end());
    queue.insert(queue.end(), s.queue_time_s.begin(), s.queue_time_s.end());
  }
  void on_request_finished(const RequestMetrics& r) override {
    std::lock_guard lock(mu);
    finished.push_back(r);
  }
  std::mutex mu;
  int64_t steps = 0, decode_bytes = 0, tokens = 0;
  std::vector<double> ttft, itl, queue;
  std::vector<RequestMetrics> finished;
};

}  // namespace

TEST_CASE("engine metrics: exact sample counts and decode cache bytes on random requests",
          "[engine][metrics][tiny]") {
  std::mt19937 rng(GENERATE(1u, 2u, 3u));
  auto metrics = std::make_shared<RecordingMetrics>();
  EngineOptions o;
  o.metrics = metrics;
  o.enable_prefix_cache = false;  // a prefix hit could leave a one-token "decode-shaped" chunk
  o.max_step_tokens = 512;        // every prompt fits one chunk: no one-token prefill tails
  Engine engine(tiny_mlra4_runner(), fake_decoder_factory(), o);
  const int64_t bpt = engine.runner_info().cache_bytes_per_token;
  REQUIRE(bpt > 0);

  const int n = 8;
  std::uniform_int_distribution<int32_t> plen(2, 40), glen(1, 12), tok(0, 255);
  std::vector<int32_t> prompt_len(n), gen_len(n);
  int64_t expected_bytes = 0, expected_itl = 0;
  std::mutex mu;
  std::condition_variable cv;
  int done = 0;
  for (int i = 0; i < n; ++i) {
    GenerationRequest r;
    prompt_len[i] = plen(rng);
    gen_len[i] = glen(rng);
    for (int32_t k = 0; k < prompt_len[i]; ++k) r.prompt_tokens.push_back(tok(rng));
    r.params.max_tokens = gen_len[i];
    r.params.temperature = 0;
    r.params.ignore_eos = true;
    for (int32_t k = 1; k < gen_len[i]; ++k) expected_bytes += (prompt_len[i] + k) * bpt;
    expected_itl += gen_len[i] - 1;
    engine.submit(std::move(r), [&](GenerationChunk&& c) {
      if (c.finish_reason == FinishReason::kNone) return;
      std::lock_guard lock(mu);
      ++done;
      cv.notify_all();
    });
  }
  {
    std::unique_lock lock(mu);
    REQUIRE(cv.wait_for(lock, 30s, [&] { return done == n; }));
  }
  engine.shutdown(true);

  std::lock_guard lock(metrics->mu);
  CHECK(metrics->ttft.size() == size_t(n));
  CHECK(metrics->queue.size() == size_t(n));
  CHECK(int64_t(metrics->itl.size()) == expected_itl);
  CHECK(metrics->decode_bytes == expected_bytes);
  REQUIRE(metrics->finished.size() == size_t(n));
  std::vector<int32_t> seen_gen;
  for (const RequestMetrics& r : metrics->finished) {
    CHECK(r.finish_reason == FinishReason::kLength);
    CHECK(r.prefill_s >= 0);
    CHECK(r.decode_s >= 0);
    CHECK(r.e2e_s >= r.prefill_s + r.decode_s);
    if (r.generation_tokens > 1) {
      CHECK(r.time_per_output_token_s == Approx(r.decode_s / (r.generation_tokens - 1)));
    } else {
      CHECK(r.time_per_output_token_s < 0);
    }
    seen_gen.push_back(r.generation_tokens);
  }
  std::sort(seen_gen.begin(), seen_gen.end());
  std::sort(gen_len.begin(), gen_len.end());
  CHECK(seen_gen == gen_len);
  // The per-request decode time is the sum of its inter-token gaps; over all requests too.
  double decode_total = 0, itl_total = 0;
  for (const RequestMetrics& r : metrics->finished) decode_total += r.decode_s;
  for (double g : metrics->itl) itl_total += g;
  CHECK(decode_total == Approx(itl_total).margin(1e-9));
}
