// The engine's metrics in Prometheus form (prometheus-cpp), named after vLLM's with the prefix
// "mlra:" and a model_name label on every series. Three sources feed it:
//  - the engine thread, through EngineMetrics (histogram observes and counter increments only);
//  - scrape time, through refresh(): gauges and cumulative counters from an EngineStats snapshot,
//    so the engine does nothing per step for them;
//  - the frontends, through count_call(): every generation call (gRPC Generate/Complete, HTTP
//    completions/chat) by protocol, method and final status (gRPC status names for both).
// The list of series and their meaning is in server/README.md.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "engine/engine.h"
#include "engine/engine_metrics.h"

namespace mlra {

// Static facts exported as mlra:cache_config_info and mlra:cache_bytes_per_token_per_rank.
struct MetricsModelInfo {
  std::string variant;
  std::string backend;
  std::string dtype;
  int32_t tp = 1;
  int32_t page_size = 0;
  int64_t num_pages = 0;
  int64_t cache_bytes_per_token_per_rank = 0;
};

MetricsModelInfo metrics_model_info(const Engine& engine, const std::string& dtype);

class PrometheusMetrics final : public EngineMetrics {
 public:
  explicit PrometheusMetrics(std::string model_name);  // the model_name label of every series
  // Publishes the static facts (known once the model is loaded).
  void describe(const MetricsModelInfo& info);

  // EngineMetrics (engine thread).
  void on_step(const StepMetrics& step) override;
  void on_request_finished(const RequestMetrics& request) override;

  // A call ended with this status code name ("OK", "CANCELLED", ...); protocol "grpc" | "http".
  void count_call(std::string_view protocol, std::string_view method, std::string_view code);
  // Scrape time: gauges and the engine's cumulative counters from a snapshot. Thread-safe.
  void refresh(const EngineStats& stats, bool healthy);

  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }

 private:
  prometheus::Labels labels(prometheus::Labels extra = {}) const;
  prometheus::Histogram& histogram(const std::string& name, const std::string& help,
                                   const prometheus::Histogram::BucketBoundaries& buckets);
  prometheus::Gauge& gauge(const std::string& name, const std::string& help);
  prometheus::Counter& counter(const std::string& name, const std::string& help);

  std::string model_name_;
  std::shared_ptr<prometheus::Registry> registry_;

  // Engine thread.
  prometheus::Histogram *ttft_, *itl_, *queue_, *iteration_tokens_, *execute_, *cache_read_;
  prometheus::Histogram *e2e_, *prefill_, *decode_, *tpot_, *prompt_len_, *generation_len_;
  prometheus::Family<prometheus::Counter>* success_;
  std::array<prometheus::Counter*, 7> success_by_reason_{};  // by FinishReason; kNone: null

  // Frontend threads (Family::Add is thread-safe).
  prometheus::Family<prometheus::Counter>* calls_;

  // Scrape time, under refresh_mutex_.
  std::mutex refresh_mutex_;
  prometheus::Gauge *running_, *waiting_, *usage_, *pages_used_, *pages_cached_, *pages_total_;
  prometheus::Gauge* healthy_;
  prometheus::Gauge* bytes_per_token_;
  struct Cumulative {
    prometheus::Counter* counter;
    int64_t last = 0;
  };
  Cumulative prompt_tokens_, generation_tokens_, preemptions_, prefix_queries_, prefix_hits_,
      steps_;
};

}  // namespace mlra
