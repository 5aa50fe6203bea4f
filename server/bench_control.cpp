// Control-channel benchmark. Ranks are threads with their own socketpair ends: the kernel path
// (copy into the socket buffer, wake-up, copy out) is the same as for worker processes, while the
// ranks do no model work, so the times are the channel's overhead alone.
#include "server/bench_control.h"

#include <algorithm>
#include <cstdio>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "engine/control_channel.h"

namespace mlra {
namespace {

struct Options {
  int batch = 64;
  int context = 2048;
  int page_size = 64;
  int vocab = 50304;
  int ranks = 4;
  int iters = 500;
};

// A decode step: `batch` sequences of `context` tokens, one new token each, scattered pages.
StepBatch decode_step(const Options& o, std::mt19937& rng) {
  StepBatch s;
  const int pages = (o.context + o.page_size) / o.page_size;
  std::uniform_int_distribution<int32_t> page(0, 1 << 20), token(0, o.vocab - 1);
  s.page_indptr.push_back(0);
  for (int b = 0; b < o.batch; ++b) {
    for (int p = 0; p < pages; ++p) s.page_indices.push_back(page(rng));
    s.page_indptr.push_back(int32_t(s.page_indices.size()));
    s.tokens.push_back(token(rng));
    s.positions.push_back(o.context);
    s.token_seq.push_back(b);
    s.slots.push_back(s.page_indices.back() * o.page_size + o.context % o.page_size);
    s.logit_rows.push_back(b);
  }
  return s;
}

// Rank 0 answers with the logits of the step's rows, the others with an Ack.
void rank_loop(ControlChannel& ch, int rank, int vocab, size_t max_rows) {
  std::vector<float> logits(max_rows * size_t(vocab), 0.5f);
  for (;;) {
    const Message m = ch.receive(Clock::time_point::max());
    if (m.type == MessageType::kShutdown) return;
    const StepBatch step = decode_step_batch(m.payload);
    const size_t floats = std::min(step.logit_rows.size(), max_rows) * size_t(vocab);
    if (rank == 0)
      ch.send(MessageType::kLogits, m.step, logits.data(), floats * sizeof(float));
    else
      ch.send(MessageType::kAck, m.step, nullptr, 0);
  }
}

struct Stats {
  double median, p90, p99;
};
Stats stats(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  auto at = [&](double q) { return v[std::min(v.size() - 1, size_t(q * double(v.size())))]; };
  return {at(0.5), at(0.9), at(0.99)};
}

double micros_since(Clock::time_point t) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t).count();
}

int run(const Options& o) {
  std::mt19937 rng(1);
  const StepBatch step = decode_step(o, rng);
  const size_t logit_floats = size_t(o.batch) * size_t(o.vocab);
  std::vector<ControlChannel> front;
  std::vector<std::unique_ptr<ControlChannel>> back;
  std::vector<std::thread> threads;
  for (int r = 0; r < o.ranks; ++r) {
    auto [a, b] = make_socket_pair();
    front.emplace_back(a);
    back.push_back(std::make_unique<ControlChannel>(b));
  }
  for (int r = 0; r < o.ranks; ++r)
    threads.emplace_back(rank_loop, std::ref(*back[size_t(r)]), r, o.vocab, size_t(o.batch));

  std::vector<double> encode_us, ack_us, total_us;
  std::vector<float> logits(logit_floats);
  const auto forever = Clock::time_point::max();
  for (int it = 0; it < o.iters + 20; ++it) {
    const auto t0 = Clock::now();
    const std::vector<char> payload = encode(step);
    const double t_encode = micros_since(t0);
    for (auto& ch : front) ch.send(MessageType::kStep, it, payload);
    for (int r = o.ranks - 1; r >= 1; --r)
      front[size_t(r)].expect(forever, it, MessageType::kAck, MessageType::kAck);
    const double t_acks = micros_since(t0);
    const MessageHeader h =
        front[0].expect_header(forever, it, MessageType::kLogits, MessageType::kLogits);
    front[0].read_payload(logits.data(), h.payload_size, forever);
    if (it >= 20) {
      encode_us.push_back(t_encode);
      ack_us.push_back(t_acks);
      total_us.push_back(micros_since(t0));
    }
  }
  for (auto& ch : front) ch.send(MessageType::kShutdown, 0, nullptr, 0);
  for (auto& t : threads) t.join();

  std::printf("control channel, decode step: batch %d, context %d, page %d, %d ranks, vocab %d\n",
              o.batch, o.context, o.page_size, o.ranks, o.vocab);
  std::printf("step message %zu bytes, logits reply %.1f MB, %d iterations\n", encode(step).size(),
              double(logit_floats * sizeof(float)) / 1e6, o.iters);
  std::printf("%-44s %10s %10s %10s\n", "phase (us)", "median", "p90", "p99");
  auto row = [](const char* name, const Stats& s) {
    std::printf("%-44s %10.1f %10.1f %10.1f\n", name, s.median, s.p90, s.p99);
  };
  row("serialize StepBatch", stats(encode_us));
  row("serialize + send + decode + Ack (all ranks)", stats(ack_us));
  row("... + rank-0 logits back (total per step)", stats(total_us));
  return 0;
}

}  // namespace

void register_bench_control(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<Options>();
  CLI::App* sub = app.add_subcommand("control", "TP control-channel overhead per decode step");
  sub->add_option("--batch", o->batch, "sequences per decode step");
  sub->add_option("--context", o->context, "tokens already cached per sequence");
  sub->add_option("--page-size", o->page_size, "tokens per cache page");
  sub->add_option("--vocab", o->vocab, "logit row width");
  sub->add_option("--ranks", o->ranks, "TP ranks (worker channels)");
  sub->add_option("--iters", o->iters, "timed iterations");
  sub->callback([o, &exit_code] { exit_code = run(*o); });
}

}  // namespace mlra
