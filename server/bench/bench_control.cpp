// Control-channel benchmark. Ranks are threads with their own socketpair ends: the kernel path
// (copy into the socket buffer, wake-up, copy out) is the same as for worker processes, while the
// ranks do no model work, so the times are the channel's overhead alone.
#include "server/bench/bench_control.h"

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
  int penalty_history = 0;  // distinct tokens per row shipped for penalties (0: no penalties)
  int logprobs = 0;         // top-n logprobs asked per row
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

// Seeded top-p sampling rows; with penalty_history, a repetition penalty over that many tokens.
SamplingBatch sampling_rows(const Options& o, std::mt19937& rng) {
  SamplingBatch s;
  std::uniform_int_distribution<int32_t> token(0, o.vocab - 1);
  for (int b = 0; b < o.batch; ++b) {
    SamplingRow row;
    row.temperature = 0.8f;
    row.top_p = 0.95f;
    row.seed = rng();
    row.index = uint64_t(b);
    row.logprobs = o.logprobs > 0 ? o.logprobs : -1;
    if (o.penalty_history > 0) row.repetition_penalty = 1.1f;
    for (int i = 0; i < o.penalty_history; ++i) {
      s.penalty_tokens.push_back(token(rng));
      s.penalty_counts.push_back(i % 3);
    }
    s.penalty_indptr.push_back(int32_t(s.penalty_tokens.size()));
    s.rows.push_back(row);
  }
  return s;
}

// What rank 0 of a real worker would send back for `sampling`: one id per row (+ logprobs).
SampledTokens fake_sample(const SamplingBatch& sampling) {
  SampledTokens t;
  for (const SamplingRow& row : sampling.rows) {
    t.tokens.push_back(int32_t(row.seed % 50000));
    t.logprobs.push_back(-1.0f);
    for (int i = 0; i < std::max(row.logprobs, 0); ++i) {
      t.top_tokens.push_back(i);
      t.top_logprobs.push_back(-2.0f);
    }
    t.top_indptr.push_back(int32_t(t.top_tokens.size()));
  }
  return t;
}

// Answers as a worker does: rank 0 with Tokens or Logits as the message asks, others Ack.
void rank_loop(ControlChannel& ch, int vocab, size_t max_rows) {
  std::vector<float> logits(max_rows * size_t(vocab), 0.5f);
  for (;;) {
    const Message m = ch.receive(Clock::time_point::max());
    if (m.type == MessageType::kShutdown) return;
    const StepMessage msg = decode_step_message(m.payload);
    if (msg.reply == StepReply::kTokens) {
      ch.send(MessageType::kTokens, m.step, encode(fake_sample(msg.sampling)));
    } else if (msg.reply == StepReply::kLogits) {
      const size_t floats = std::min(msg.step.logit_rows.size(), max_rows) * size_t(vocab);
      ch.send(MessageType::kLogits, m.step, logits.data(), floats * sizeof(float));
    } else {
      ch.send(MessageType::kAck, m.step, nullptr, 0);
    }
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

struct Timings {
  std::vector<double> encode_us, ack_us, total_us;
};

// One mode's loop: tokens back (the serving path) or raw logits back (perplexity, golden tests).
Timings measure(const Options& o, std::vector<ControlChannel>& front, const StepBatch& step,
                const SamplingBatch& sampling, StepReply reply, int64_t& seq, size_t& reply_bytes) {
  Timings t;
  std::vector<float> logits(size_t(o.batch) * size_t(o.vocab));
  const auto forever = Clock::time_point::max();
  for (int it = 0; it < o.iters + 20; ++it, ++seq) {
    const auto t0 = Clock::now();
    const std::vector<char> to_rank0 = encode_step_message(step, reply, &sampling);
    const std::vector<char> to_others = encode_step_message(step, StepReply::kAck, nullptr);
    const double t_encode = micros_since(t0);
    for (size_t r = 0; r < front.size(); ++r)
      front[r].send(MessageType::kStep, seq, r == 0 ? to_rank0 : to_others);
    for (size_t r = front.size() - 1; r >= 1; --r)
      front[r].expect(forever, seq, MessageType::kAck, MessageType::kAck);
    const double t_acks = micros_since(t0);
    if (reply == StepReply::kTokens) {
      const Message m = front[0].expect(forever, seq, MessageType::kTokens, MessageType::kTokens);
      const SampledTokens got = decode_sampled_tokens(m.payload);
      reply_bytes = m.payload.size();
      if (got.size() != o.batch) throw std::runtime_error("bench: wrong token count");
    } else {
      const MessageHeader h =
          front[0].expect_header(forever, seq, MessageType::kLogits, MessageType::kLogits);
      front[0].read_payload(logits.data(), h.payload_size, forever);
      reply_bytes = h.payload_size;
    }
    if (it >= 20) {
      t.encode_us.push_back(t_encode);
      t.ack_us.push_back(t_acks);
      t.total_us.push_back(micros_since(t0));
    }
  }
  return t;
}

int run(const Options& o) {
  std::mt19937 rng(1);
  const StepBatch step = decode_step(o, rng);
  const SamplingBatch sampling = sampling_rows(o, rng);
  std::vector<ControlChannel> front;
  std::vector<std::unique_ptr<ControlChannel>> back;
  std::vector<std::thread> threads;
  for (int r = 0; r < o.ranks; ++r) {
    auto [a, b] = make_socket_pair();
    front.emplace_back(a);
    back.push_back(std::make_unique<ControlChannel>(b));
  }
  for (int r = 0; r < o.ranks; ++r)
    threads.emplace_back(rank_loop, std::ref(*back[size_t(r)]), o.vocab, size_t(o.batch));

  int64_t seq = 1;
  size_t tokens_bytes = 0, logits_bytes = 0;
  const Timings sampled = measure(o, front, step, sampling, StepReply::kTokens, seq, tokens_bytes);
  const Timings raw = measure(o, front, step, sampling, StepReply::kLogits, seq, logits_bytes);
  for (auto& ch : front) ch.send(MessageType::kShutdown, seq, nullptr, 0);
  for (auto& t : threads) t.join();

  const size_t plan_bytes = encode_step_message(step, StepReply::kAck, nullptr).size();
  const size_t rank0_bytes = encode_step_message(step, StepReply::kTokens, &sampling).size();
  std::printf("control channel, decode step: batch %d, context %d, page %d, %d ranks, vocab %d\n",
              o.batch, o.context, o.page_size, o.ranks, o.vocab);
  std::printf(
      "step message %zu bytes (ranks > 0), %zu bytes to rank 0 (+%zu sampling: %d rows, %zu "
      "penalty "
      "entries); tokens reply %zu bytes, logits reply %.1f MB; %d iterations\n",
      plan_bytes, rank0_bytes, rank0_bytes - plan_bytes, o.batch, sampling.penalty_tokens.size(),
      tokens_bytes, double(logits_bytes) / 1e6, o.iters);
  std::printf("%-52s %10s %10s %10s\n", "phase (us)", "median", "p90", "p99");
  auto row = [](const char* name, const Stats& s) {
    std::printf("%-52s %10.1f %10.1f %10.1f\n", name, s.median, s.p90, s.p99);
  };
  row("serialize plan (+ rank-0 sampling rows)", stats(sampled.encode_us));
  row("serialize + send + decode + Ack (ranks > 0)", stats(sampled.ack_us));
  row("... + rank-0 token ids back (total per step)", stats(sampled.total_us));
  row("raw-logits step: ... + rank-0 logits back (total)", stats(raw.total_us));
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
  sub->add_option("--penalty-history", o->penalty_history,
                  "distinct tokens per row shipped for a repetition penalty (0: none)");
  sub->add_option("--logprobs", o->logprobs, "top-n logprobs asked per row");
  sub->callback([o, &exit_code] { exit_code = run(*o); });
}

}  // namespace mlra
