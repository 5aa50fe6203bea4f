// A strict reader for the Prometheus text exposition format (version 0.0.4), enough to check
// and difference scrapes: `mlra-bench serve --metrics` reports server-side numbers from it and
// the tests parse the live /metrics endpoint with it. Not a general client library.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mlra {

struct MetricSample {
  std::string name;                           // e.g. "mlra:time_to_first_token_seconds_count"
  std::map<std::string, std::string> labels;  // unescaped values
  double value = 0;
};

struct MetricsScrape {
  std::vector<MetricSample> samples;
  std::map<std::string, std::string> types;  // family name -> "counter" | "gauge" | ...

  // Sum of the values of `name` over every sample whose labels include all of `match`;
  // nullopt when no sample matches.
  std::optional<double> sum(std::string_view name,
                            const std::map<std::string, std::string>& match = {}) const;
};

// Throws std::runtime_error naming the line on anything malformed.
MetricsScrape parse_prometheus_text(std::string_view text);

}  // namespace mlra
