// Scrapes /metrics until a condition holds: a call is counted when its transport reports it done,
// which may come after the client already has its status.
#pragma once

#include <chrono>
#include <thread>

#include "server/prometheus_text.h"

namespace mlra {

// Parses fetch() (a /metrics body) until done(scrape) or `timeout` passes; returns the last scrape.
template <class Fetch, class Done>
MetricsScrape scrape_until(Fetch fetch, Done done,
                           std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  const auto give_up = std::chrono::steady_clock::now() + timeout;
  MetricsScrape scrape = parse_prometheus_text(fetch());
  while (!done(scrape) && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    scrape = parse_prometheus_text(fetch());
  }
  return scrape;
}

}  // namespace mlra
