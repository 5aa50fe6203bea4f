// PrometheusMetrics: families are registered once in the constructor; the engine thread only
// observes histograms and increments counters it already holds pointers to (header).
#include "server/prometheus_metrics.h"

#include <algorithm>

namespace mlra {
namespace {

using Buckets = prometheus::Histogram::BucketBoundaries;

// Latencies from 0.5 ms (a tiny CPU model) to minutes (a long queue on a busy node).
const Buckets& latency_buckets() {
  static const Buckets b = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.04,  0.06,
                            0.08,   0.1,   0.15,   0.2,   0.3,  0.5,  0.75,  1.0,
                            2.5,    5.0,   10.0,   20.0,  40.0, 80.0, 160.0, 640.0};
  return b;
}

const Buckets& token_count_buckets() {
  static const Buckets b = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384};
  return b;
}

// 1 KiB .. 64 GiB in steps of 4x: a tiny CPU model's step reads kilobytes, a TP rank serving a
// thousand long contexts reads gigabytes.
const Buckets& byte_buckets() {
  static const Buckets b = [] {
    Buckets out;
    for (double v = 1024; v <= 68719476736.0; v *= 4) out.push_back(v);
    return out;
  }();
  return b;
}

void observe_all(prometheus::Histogram& h, std::span<const double> values) {
  for (double v : values) h.Observe(v);
}

}  // namespace

prometheus::Labels PrometheusMetrics::labels(prometheus::Labels extra) const {
  extra.emplace("model_name", model_name_);
  return extra;
}

prometheus::Histogram& PrometheusMetrics::histogram(const std::string& name,
                                                    const std::string& help,
                                                    const Buckets& buckets) {
  auto& family = prometheus::BuildHistogram().Name(name).Help(help).Register(*registry_);
  return family.Add(labels(), buckets);
}

prometheus::Gauge& PrometheusMetrics::gauge(const std::string& name, const std::string& help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(*registry_).Add(labels());
}

prometheus::Counter& PrometheusMetrics::counter(const std::string& name, const std::string& help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(*registry_).Add(labels());
}

MetricsModelInfo metrics_model_info(const Engine& engine, const std::string& dtype) {
  const RunnerInfo r = engine.runner_info();
  MetricsModelInfo m;
  m.variant = engine.model_config().variant.name();
  m.backend = r.backend;
  m.dtype = dtype;
  m.tp = r.tp;
  m.page_size = engine.options().page_size;
  m.num_pages = engine.options().num_pages;
  m.cache_bytes_per_token_per_rank = r.cache_bytes_per_token;
  return m;
}

PrometheusMetrics::PrometheusMetrics(std::string model_name)
    : model_name_(std::move(model_name)), registry_(std::make_shared<prometheus::Registry>()) {
  ttft_ = &histogram("mlra:time_to_first_token_seconds",
                     "Time from submission to the first token, per request.", latency_buckets());
  itl_ =
      &histogram("mlra:inter_token_latency_seconds",
                 "Time between two successive tokens of a request, per token.", latency_buckets());
  queue_ = &histogram("mlra:request_queue_time_seconds",
                      "Time from submission to the first scheduled step, per request.",
                      latency_buckets());
  iteration_tokens_ = &histogram("mlra:iteration_tokens_total",
                                 "Tokens computed per engine step (decodes + prefill chunks).",
                                 token_count_buckets());
  execute_ = &histogram("mlra:model_execute_time_seconds",
                        "Wall time of one step in the runner (forward and sampling, all ranks).",
                        latency_buckets());
  cache_read_ = &histogram(
      "mlra:latent_cache_bytes_read_per_rank",
      "Latent (or K/V) cache bytes one rank reads for the decode sequences of a step: sum of "
      "context length x cache bytes per token per rank over all layers.",
      byte_buckets());
  e2e_ = &histogram("mlra:e2e_request_latency_seconds",
                    "Time from submission to the final chunk, per finished request.",
                    latency_buckets());
  prefill_ =
      &histogram("mlra:request_prefill_time_seconds",
                 "Time from the first scheduled step to the first token.", latency_buckets());
  decode_ = &histogram("mlra:request_decode_time_seconds",
                       "Time from the first token to the last token.", latency_buckets());
  tpot_ = &histogram("mlra:request_time_per_output_token_seconds",
                     "Mean time per output token after the first, per request.", latency_buckets());
  prompt_len_ = &histogram("mlra:request_prompt_tokens", "Prompt tokens per finished request.",
                           token_count_buckets());
  generation_len_ = &histogram("mlra:request_generation_tokens",
                               "Generated tokens per finished request.", token_count_buckets());
  success_ = &prometheus::BuildCounter()
                  .Name("mlra:request_success_total")
                  .Help(
                      "Requests the engine finished, by finish reason (length, stop, eos, "
                      "cancelled, aborted, error).")
                  .Register(*registry_);
  // Every reason is exported from the start (at 0), so rates exist before the first event.
  for (FinishReason r : {FinishReason::kLength, FinishReason::kStop, FinishReason::kEos,
                         FinishReason::kCancelled, FinishReason::kAborted, FinishReason::kError}) {
    success_by_reason_[static_cast<size_t>(r)] =
        &success_->Add(labels({{"finished_reason", finish_reason_name(r)}}));
  }
  calls_ = &prometheus::BuildCounter()
                .Name("mlra:requests_total")
                .Help(
                    "Calls by protocol (grpc, http), method and final status (gRPC status names "
                    "for both protocols), also those rejected before reaching the engine.")
                .Register(*registry_);

  running_ = &gauge("mlra:num_requests_running", "Requests in the running batch.");
  waiting_ = &gauge("mlra:num_requests_waiting", "Requests queued for admission.");
  usage_ = &gauge("mlra:kv_cache_usage_perc",
                  "Fraction of cache pages referenced by a request (0 to 1).");
  pages_used_ = &gauge("mlra:cache_pages_used", "Cache pages referenced by a request.");
  pages_cached_ =
      &gauge("mlra:cache_pages_cached", "Free cache pages still holding a reusable prefix.");
  pages_total_ = &gauge("mlra:cache_pages_total", "Cache pages per rank.");
  healthy_ = &gauge("mlra:engine_healthy", "1 while the engine admits requests, else 0.");
  prompt_tokens_.counter = &counter("mlra:prompt_tokens_total", "Prompt tokens admitted.");
  generation_tokens_.counter = &counter("mlra:generation_tokens_total", "Tokens generated.");
  preemptions_.counter = &counter("mlra:num_preemptions_total", "Sequences preempted.");
  prefix_queries_.counter =
      &counter("mlra:prefix_cache_queries_total", "Tokens looked up in the prefix cache.");
  prefix_hits_.counter =
      &counter("mlra:prefix_cache_hits_total", "Looked-up tokens found in the prefix cache.");
  steps_.counter = &counter("mlra:engine_steps_total", "Engine steps executed.");

  bytes_per_token_ = &gauge("mlra:cache_bytes_per_token_per_rank",
                            "Cache bytes of one token on one rank, all layers.");
}

void PrometheusMetrics::describe(const MetricsModelInfo& info) {
  bytes_per_token_->Set(static_cast<double>(info.cache_bytes_per_token_per_rank));
  prometheus::BuildGauge()
      .Name("mlra:cache_config_info")
      .Help("Serving configuration (value 1; the facts are labels).")
      .Register(*registry_)
      .Add(labels({{"variant", info.variant},
                   {"backend", info.backend},
                   {"dtype", info.dtype},
                   {"tp", std::to_string(info.tp)},
                   {"page_size", std::to_string(info.page_size)},
                   {"num_pages", std::to_string(info.num_pages)}}))
      .Set(1);
}

void PrometheusMetrics::on_step(const StepMetrics& step) {
  iteration_tokens_->Observe(step.num_tokens);
  execute_->Observe(step.execute_seconds);
  if (step.num_decode_seqs > 0) {
    cache_read_->Observe(static_cast<double>(step.decode_cache_bytes_read_per_rank));
  }
  observe_all(*ttft_, step.time_to_first_token_s);
  observe_all(*itl_, step.inter_token_latency_s);
  observe_all(*queue_, step.queue_time_s);
}

void PrometheusMetrics::on_request_finished(const RequestMetrics& r) {
  if (prometheus::Counter* c = success_by_reason_[static_cast<size_t>(r.finish_reason)]) {
    c->Increment();
  }
  e2e_->Observe(r.e2e_s);
  prompt_len_->Observe(r.prompt_tokens);
  generation_len_->Observe(r.generation_tokens);
  if (r.prefill_s >= 0) prefill_->Observe(r.prefill_s);
  if (r.decode_s >= 0) decode_->Observe(r.decode_s);
  if (r.time_per_output_token_s >= 0) tpot_->Observe(r.time_per_output_token_s);
}

void PrometheusMetrics::count_call(std::string_view protocol, std::string_view method,
                                   std::string_view code) {
  calls_
      ->Add(labels({{"protocol", std::string(protocol)},
                    {"method", std::string(method)},
                    {"code", std::string(code)}}))
      .Increment();
}

void PrometheusMetrics::refresh(const EngineStats& s, bool healthy) {
  std::lock_guard lock(refresh_mutex_);
  running_->Set(static_cast<double>(s.running));
  waiting_->Set(static_cast<double>(s.waiting));
  pages_used_->Set(static_cast<double>(s.pages_used));
  pages_cached_->Set(static_cast<double>(s.pages_cached));
  pages_total_->Set(static_cast<double>(s.pages_total));
  usage_->Set(s.pages_total > 0 ? static_cast<double>(s.pages_used) / s.pages_total : 0.0);
  healthy_->Set(healthy ? 1 : 0);
  auto advance = [](Cumulative& c, int64_t now) {
    if (now > c.last) c.counter->Increment(static_cast<double>(now - c.last));
    c.last = std::max(c.last, now);
  };
  advance(prompt_tokens_, s.prompt_tokens);
  advance(generation_tokens_, s.generated_tokens);
  advance(preemptions_, s.preemptions);
  advance(prefix_queries_, s.prefix_query_tokens);
  advance(prefix_hits_, s.prefix_hit_tokens);
  advance(steps_, s.steps);
}

}  // namespace mlra
