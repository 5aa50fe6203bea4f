// Load generator: request plan (seeded), one ClientReadReactor per stream, a main thread that
// keeps `concurrency` streams open, then the contract checks and the report (header).
#include "server/bench/load_generator.h"

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/client_callback.h>

#include "proto/mlra.grpc.pb.h"
#include "server/bench/stream_tracker.h"
#include "server/request_log.h"

namespace mlra {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// One Generate stream. gRPC serialises a reactor's callbacks (one read outstanding at a
// time, OnDone last), so the record needs no lock; the main thread reads it only after OnDone.
class StreamCall final : public grpc::ClientReadReactor<v1::GenerateResponse> {
 public:
  StreamCall(v1::Mlra::Stub& stub, v1::GenerateRequest request, StreamRecord& record,
             StreamTracker& tracker, std::chrono::milliseconds deadline)
      : stub_(stub), request_(std::move(request)), record_(record), tracker_(tracker) {
    ctx_.set_deadline(std::chrono::system_clock::now() + deadline);
  }

  void start() {
    start_ = Clock::now();
    last_token_ = start_;
    tracker_.started();
    stub_.async()->Generate(&ctx_, &request_, this);
    StartRead(&response_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream is over; OnDone follows with the status
    const Clock::time_point now = Clock::now();
    StreamRecord& r = record_;
    ++r.chunks;
    if (r.finish_chunks > 0) r.chunk_after_finish = true;
    if (response_.token_ids_size() > 0) {
      if (r.ttft_s < 0) {
        r.ttft_s = seconds_between(start_, now);
      } else {
        r.itl_s.push_back(seconds_between(last_token_, now));
      }
      last_token_ = now;
      r.tokens += response_.token_ids_size();
    }
    if (response_.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
      ++r.finish_chunks;
      r.finish_reason = response_.finish_reason();
      r.usage_completion_tokens = response_.usage().completion_tokens();
    }
    if (r.cancel_after_chunks > 0 && r.chunks == r.cancel_after_chunks && r.finish_chunks == 0) {
      r.cancelled_by_client = true;
      ctx_.TryCancel();
    }
    StartRead(&response_);
  }

  void OnDone(const grpc::Status& status) override {
    record_.code = status.error_code();
    record_.message = status.error_message();
    record_.e2e_s = seconds_between(start_, Clock::now());
    record_.done = true;
    tracker_.finished();
  }

 private:
  v1::Mlra::Stub& stub_;
  grpc::ClientContext ctx_;
  v1::GenerateRequest request_;
  v1::GenerateResponse response_;
  StreamRecord& record_;
  StreamTracker& tracker_;
  Clock::time_point start_, last_token_;
};

}  // namespace

LoadPlan make_load_plan(const LoadOptions& o, const v1::ModelInfoResponse& info) {
  const int32_t n = o.num_requests > 0 ? o.num_requests : o.concurrency;
  const int64_t context = info.max_context();
  if (o.min_prompt_tokens < 1 || o.max_prompt_tokens < o.min_prompt_tokens ||
      o.min_output_tokens < 1 || o.max_output_tokens < o.min_output_tokens) {
    throw std::runtime_error("prompt/output length ranges must be non-empty and >= 1");
  }
  if (o.max_prompt_tokens + 1 > context) {
    throw std::runtime_error(fmt::format("max prompt length {} leaves no room in the context {}",
                                         o.max_prompt_tokens, context));
  }
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(info.text_vocab_size()) - 1);
  std::uniform_int_distribution<int32_t> prompt_len(o.min_prompt_tokens, o.max_prompt_tokens);
  std::uniform_int_distribution<int32_t> output_len(o.min_output_tokens, o.max_output_tokens);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::vector<int32_t> prefix(static_cast<size_t>(std::max(o.shared_prefix_tokens, 0)));
  for (int32_t& t : prefix) t = token(rng);

  LoadPlan plan;
  for (int32_t i = 0; i < n; ++i) {
    v1::GenerateRequest r;
    StreamRecord rec;
    const int32_t len = prompt_len(rng);
    const bool shared = unit(rng) < o.shared_prefix_fraction;
    for (int32_t k = 0; k < len; ++k) {
      const bool from_prefix = shared && k < static_cast<int32_t>(prefix.size());
      r.mutable_token_ids()->add_ids(from_prefix ? prefix[size_t(k)] : token(rng));
    }
    rec.prompt_tokens = len;
    rec.max_tokens = std::min<int32_t>(output_len(rng), static_cast<int32_t>(context - len));
    if (unit(rng) < o.cancel_fraction) {
      rec.cancel_after_chunks = std::uniform_int_distribution<int32_t>(1, rec.max_tokens)(rng);
    }
    auto* s = r.mutable_sampling();
    s->set_max_tokens(rec.max_tokens);
    s->set_temperature(o.temperature);
    s->set_seed(o.seed * 1000003 + static_cast<uint64_t>(i));
    s->set_ignore_eos(true);  // outputs run to max_tokens, so the token count is checkable
    plan.requests.push_back(std::move(r));
    plan.records.push_back(rec);
  }
  return plan;
}

namespace {

bool tolerated(const LoadOptions& o, grpc::StatusCode code) {
  return std::find(o.tolerated.begin(), o.tolerated.end(), code) != o.tolerated.end();
}

std::shared_ptr<grpc::Channel> make_channel(const std::string& target, int index) {
  grpc::ChannelArguments args;
  // A distinct argument per channel keeps gRPC from sharing one connection between them.
  args.SetInt("mlra.load_channel", index);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

}  // namespace

void check_cache_free(v1::Mlra::Stub& stub, LoadReport& report) {
  const auto deadline = Clock::now() + report.options.cache_free_wait;
  v1::StatsResponse stats;
  for (;;) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    grpc::Status s = stub.Stats(&ctx, v1::StatsRequest(), &stats);
    if (!s.ok()) {
      report.failures.push_back("Stats after the run failed: " + s.error_message());
      return;
    }
    report.final_stats = stats;
    if (stats.running() == 0 && stats.waiting() == 0 && stats.pages_used() == 0) return;
    if (Clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  report.failures.push_back(
      fmt::format("cache not free after the run: running {}, waiting {}, pages used {} of {}",
                  stats.running(), stats.waiting(), stats.pages_used(), stats.pages_total()));
}

v1::ModelInfoResponse fetch_model_info(v1::Mlra::Stub& stub, const std::string& target) {
  v1::ModelInfoResponse info;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  const grpc::Status s = stub.ModelInfo(&ctx, v1::ModelInfoRequest(), &info);
  if (!s.ok()) {
    throw std::runtime_error(fmt::format("ModelInfo on {}: {}", target, s.error_message()));
  }
  return info;
}

void check_streams(LoadReport& report) {
  int32_t bad = 0;
  for (size_t i = 0; i < report.streams.size(); ++i) {
    const std::string problem = check_stream(report.streams[i], report.options);
    if (problem.empty()) continue;
    if (++bad <= 10) report.failures.push_back(fmt::format("request {}: {}", i, problem));
  }
  if (bad > 10) report.failures.push_back(fmt::format("... {} failing requests in all", bad));
}

std::string check_stream(const StreamRecord& s, const LoadOptions& o) {
  if (!s.done) return "never ended (hung)";
  if (s.code == grpc::StatusCode::DEADLINE_EXCEEDED) return "hung: deadline exceeded";
  if (s.finish_chunks > 1) return fmt::format("{} final chunks", s.finish_chunks);
  if (s.chunk_after_finish) return "a chunk after the final chunk";
  const bool finished_normally = s.finish_reason == v1::FINISH_REASON_LENGTH ||
                                 s.finish_reason == v1::FINISH_REASON_STOP ||
                                 s.finish_reason == v1::FINISH_REASON_EOS;
  if (s.code == grpc::StatusCode::OK) {
    if (s.finish_chunks != 1) return "status OK without a final chunk";
    if (!finished_normally) {
      return "status OK with finish reason " + v1::FinishReason_Name(s.finish_reason);
    }
    if (s.usage_completion_tokens != s.tokens) {
      return fmt::format("usage says {} tokens, {} arrived", s.usage_completion_tokens, s.tokens);
    }
    if (s.finish_reason == v1::FINISH_REASON_LENGTH && s.tokens != s.max_tokens) {
      return fmt::format("finished by length after {} of {} tokens", s.tokens, s.max_tokens);
    }
    return "";
  }
  if (s.finish_chunks == 1 && finished_normally) {
    return fmt::format("final chunk {} but status {}", v1::FinishReason_Name(s.finish_reason),
                       status_code_name(s.code));
  }
  if (s.code == grpc::StatusCode::CANCELLED && s.cancelled_by_client) return "";
  if (tolerated(o, s.code)) {
    if (s.finish_chunks == 1 && s.code == grpc::StatusCode::UNAVAILABLE &&
        s.finish_reason != v1::FINISH_REASON_ABORTED) {
      return "UNAVAILABLE after final chunk " + v1::FinishReason_Name(s.finish_reason);
    }
    return "";
  }
  return fmt::format("status {}: {}", status_code_name(s.code), s.message);
}

LoadReport run_load(const std::string& target, const LoadOptions& options) {
  if (options.concurrency < 1 || options.channels < 1) {
    throw std::runtime_error("concurrency and channels must be >= 1");
  }
  LoadReport report;
  report.options = options;
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<v1::Mlra::Stub>> stubs;
  for (int c = 0; c < options.channels; ++c) {
    channels.push_back(make_channel(target, c));
    stubs.push_back(v1::Mlra::NewStub(channels.back()));
  }
  const v1::ModelInfoResponse info = fetch_model_info(*stubs[0], target);
  LoadPlan plan = make_load_plan(options, info);
  report.streams = std::move(plan.records);
  const int32_t total = static_cast<int32_t>(report.streams.size());
  StreamTracker tracker;
  std::vector<std::unique_ptr<StreamCall>> calls;
  calls.reserve(size_t(total));
  const Clock::time_point start = Clock::now();
  for (int32_t i = 0; i < total; ++i) {
    tracker.wait_below(options.concurrency);
    calls.push_back(std::make_unique<StreamCall>(
        *stubs[size_t(i % options.channels)], std::move(plan.requests[size_t(i)]),
        report.streams[size_t(i)], tracker, options.stream_deadline));
    calls.back()->start();
  }
  // Every stream carries its own deadline; this outer bound only catches a stream gRPC never
  // completes, whose reactor must then outlive this function.
  const bool all_done =
      tracker.wait_all(total, Clock::now() + options.stream_deadline + std::chrono::seconds(30));
  report.wall_s = seconds_between(start, Clock::now());
  if (!all_done) {
    for (auto& call : calls) call.release();  // still referenced by gRPC: leak, do not free
  }
  check_streams(report);
  if (options.check_cache_free && all_done) check_cache_free(*stubs[0], report);
  return report;
}

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  const double rank = std::ceil(q / 100.0 * static_cast<double>(v.size()));
  const size_t index = static_cast<size_t>(std::clamp(rank, 1.0, static_cast<double>(v.size())));
  return v[index - 1];
}

std::string format_report(const LoadReport& r) {
  std::vector<double> ttft, itl, e2e;
  int64_t tokens = 0;
  int32_t ok = 0, hung = 0;
  std::map<std::string, int32_t> by_status, by_reason;
  for (const StreamRecord& s : r.streams) {
    tokens += s.tokens;
    if (s.ttft_s >= 0) ttft.push_back(s.ttft_s * 1e3);
    for (double g : s.itl_s) itl.push_back(g * 1e3);
    if (!s.done) ++hung;
    if (s.done && s.code == grpc::StatusCode::OK) {
      ++ok;
      e2e.push_back(s.e2e_s * 1e3);
    }
    std::string status = s.done ? status_code_name(s.code) : "HUNG";
    if (s.cancelled_by_client && s.code == grpc::StatusCode::CANCELLED) status += " (client)";
    ++by_status[status];
    ++by_reason[s.finish_chunks > 0 ? v1::FinishReason_Name(s.finish_reason) : "(no final chunk)"];
  }
  const LoadOptions& o = r.options;
  std::string out = fmt::format(
      "mlra-bench serve ({}): {} requests, concurrency {}, {} channels, prompts {}-{} tokens, "
      "outputs {}-{} tokens, {:.0f}% cancelled by the client, wall {:.2f} s\n",
      r.protocol, r.streams.size(), o.concurrency, o.channels, o.min_prompt_tokens,
      o.max_prompt_tokens, o.min_output_tokens, o.max_output_tokens, o.cancel_fraction * 100,
      r.wall_s);
  const double wall = std::max(r.wall_s, 1e-9);
  out += fmt::format("  throughput     {:10.1f} output tok/s   {:8.2f} req/s (completed)\n",
                     tokens / wall, ok / wall);
  out += fmt::format("  {:<14} {:>10} {:>10} {:>10} {:>10}\n", "latency (ms)", "p50", "p90", "p99",
                     "count");
  auto row = [&](const char* name, const std::vector<double>& v) {
    out += fmt::format("  {:<14} {:10.2f} {:10.2f} {:10.2f} {:10}\n", name, percentile(v, 50),
                       percentile(v, 90), percentile(v, 99), v.size());
  };
  row("TTFT", ttft);
  row("ITL", itl);
  row("e2e (OK)", e2e);
  out += "  status:";
  for (const auto& [k, v] : by_status) out += fmt::format("  {} {}", k, v);
  out += "\n  final chunk:";
  for (const auto& [k, v] : by_reason) out += fmt::format("  {} {}", k, v);
  out += '\n';
  if (r.final_stats) {
    const v1::StatsResponse& st = *r.final_stats;
    out += fmt::format(
        "  after the run: running {}, waiting {}, pages used {} of {} ({} cached), prefix hits "
        "{} of {} looked-up tokens, {} preemptions\n",
        st.running(), st.waiting(), st.pages_used(), st.pages_total(), st.pages_cached(),
        st.prefix_hit_tokens(), st.prefix_query_tokens(), st.preemptions());
  }
  if (r.ok()) {
    out += fmt::format("  checks: PASS ({} streams, each with one terminal status; 0 hung{})\n",
                       r.streams.size(), o.check_cache_free ? "; cache free" : "");
  } else {
    out += fmt::format("  checks: FAIL ({} hung)\n", hung);
    for (const std::string& f : r.failures) out += "    " + f + "\n";
  }
  return out;
}

}  // namespace mlra
