// HTTP load: one HttpStream per request (connect, POST, read the chunked SSE body with Beast's
// parser, count events), a Tracker-like counter, then the shared checks and report (header).
#include "server/bench/load_generator_http.h"
#include "server/bench/stream_tracker.h"

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include <fmt/format.h>
#include <grpcpp/create_channel.h>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

namespace mlra {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

std::string request_body(const v1::GenerateRequest& r) {
  const v1::SamplingParams& s = r.sampling();
  Json body = {
      {"prompt", std::vector<int32_t>(r.token_ids().ids().begin(), r.token_ids().ids().end())},
      {"max_tokens", s.max_tokens()},
      {"temperature", s.temperature()},
      {"seed", s.seed()},
      {"ignore_eos", s.ignore_eos()},
      {"stream", true},
      {"stream_options", {{"include_usage", true}}}};
  return body.dump();
}

// One streamed completion. Runs on its strand; the record is read only after finished().
class HttpStream : public std::enable_shared_from_this<HttpStream> {
 public:
  HttpStream(net::io_context& ioc, const tcp::resolver::results_type& endpoints,
             const std::string& host, std::string body, StreamRecord& record,
             StreamTracker& counter, std::chrono::milliseconds deadline)
      : socket_(net::make_strand(ioc)),
        timer_(socket_.get_executor()),
        endpoints_(endpoints),
        record_(record),
        counter_(counter),
        deadline_(deadline) {
    request_ = {bhttp::verb::post, "/v1/completions", 11};
    request_.set(bhttp::field::host, host);
    request_.set(bhttp::field::content_type, "application/json");
    request_.body() = std::move(body);
    request_.prepare_payload();
    parser_.body_limit(std::numeric_limits<uint64_t>::max());
    on_chunk_ = [this](uint64_t, beast::string_view body, beast::error_code& ec) {
      on_body(std::string_view(body.data(), body.size()));
      ec = {};
      return body.size();
    };
    parser_.on_chunk_body(on_chunk_);  // the parser keeps a reference: a member outlives it
  }

  void start() {
    start_ = last_ = Clock::now();
    counter_.started();
    net::dispatch(socket_.get_executor(), [s = shared_from_this()] {
      s->timer_.expires_after(s->deadline_);
      s->timer_.async_wait([s](beast::error_code ec) {
        if (!ec) s->end(grpc::StatusCode::DEADLINE_EXCEEDED, "deadline exceeded (hung)");
      });
      net::async_connect(
          s->socket_, s->endpoints_, [s](beast::error_code ec, const tcp::endpoint&) {
            if (ec) return s->end(grpc::StatusCode::UNAVAILABLE, "connect: " + ec.message());
            bhttp::async_write(s->socket_, s->request_, [s](beast::error_code e, size_t) {
              if (e) return s->end(grpc::StatusCode::UNAVAILABLE, "write: " + e.message());
              s->read();
            });
          });
    });
  }

 private:
  void read() {
    bhttp::async_read_some(
        socket_, buffer_, parser_, [s = shared_from_this()](beast::error_code ec, size_t) {
          if (s->done_) return;
          if (ec) return s->end(grpc::StatusCode::UNAVAILABLE, "read: " + ec.message());
          if (s->parser_.is_header_done() && s->parser_.get().result_int() != 200 &&
              !s->status_seen_) {
            s->status_seen_ = true;
            s->http_error_ = true;
          }
          if (s->parser_.is_done()) return s->finish();
          s->read();
        });
  }

  void on_body(std::string_view data) {
    pending_.append(data);
    for (size_t end; (end = pending_.find("\n\n")) != std::string::npos;) {
      const std::string event = pending_.substr(0, end);
      pending_.erase(0, end + 2);
      on_event(event);
      if (done_) return;
    }
  }

  void on_event(const std::string& event) {
    StreamRecord& r = record_;
    if (event.rfind("data: ", 0) != 0) return protocol_error("not an SSE data line");
    const std::string data = event.substr(6);
    if (data == "[DONE]") {
      done_seen_ = true;
      return;
    }
    const Json j = Json::parse(data, nullptr, false);
    if (j.is_discarded()) return protocol_error("event is not JSON");
    if (j.contains("error")) {
      error_message_ = j["error"].value("message", "");
      return;
    }
    if (j.contains("usage") && j["usage"].is_object()) {
      r.usage_completion_tokens = j["usage"].value("completion_tokens", -1);
      r.tokens = r.usage_completion_tokens;
    }
    if (!j.contains("choices") || j["choices"].empty()) return;
    const Clock::time_point now = Clock::now();
    ++r.chunks;
    if (r.finish_chunks > 0) r.chunk_after_finish = true;
    const Json& c = j["choices"][0];
    if (!c.value("text", "").empty()) {
      if (r.ttft_s < 0) {
        r.ttft_s = seconds_between(start_, now);
      } else {
        r.itl_s.push_back(seconds_between(last_, now));
      }
      last_ = now;
    }
    if (!c["finish_reason"].is_null()) {
      ++r.finish_chunks;
      const std::string reason = c["finish_reason"];
      r.finish_reason = reason == "length" ? v1::FINISH_REASON_LENGTH : v1::FINISH_REASON_STOP;
    }
    if (r.cancel_after_chunks > 0 && r.chunks == r.cancel_after_chunks && r.finish_chunks == 0) {
      r.cancelled_by_client = true;
      end(grpc::StatusCode::CANCELLED, "cancelled by the client");
    }
  }

  void protocol_error(const std::string& why) { end(grpc::StatusCode::INTERNAL, "SSE: " + why); }

  void finish() {
    if (http_error_) {
      return end(grpc::StatusCode::INTERNAL, fmt::format("HTTP {}", parser_.get().result_int()));
    }
    if (!error_message_.empty()) return end(grpc::StatusCode::UNAVAILABLE, error_message_);
    if (!done_seen_) return end(grpc::StatusCode::INTERNAL, "stream ended without [DONE]");
    end(grpc::StatusCode::OK, "");
  }

  void end(grpc::StatusCode code, const std::string& message) {
    if (done_) return;
    done_ = true;
    record_.code = code;
    record_.message = message;
    record_.e2e_s = seconds_between(start_, Clock::now());
    record_.done = true;
    timer_.cancel();
    beast::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    counter_.finished();
  }

  tcp::socket socket_;
  net::steady_timer timer_;
  tcp::resolver::results_type endpoints_;
  bhttp::request<bhttp::string_body> request_;
  std::function<size_t(uint64_t, beast::string_view, beast::error_code&)> on_chunk_;
  bhttp::response_parser<bhttp::empty_body> parser_;
  beast::flat_buffer buffer_;
  std::string pending_;
  StreamRecord& record_;
  StreamTracker& counter_;
  std::chrono::milliseconds deadline_;
  Clock::time_point start_, last_;
  bool done_ = false, done_seen_ = false, status_seen_ = false, http_error_ = false;
  std::string error_message_;
};

}  // namespace

LoadReport run_http_load(const std::string& http_target, const std::string& grpc_target,
                         const LoadOptions& options) {
  if (options.concurrency < 1) throw std::runtime_error("concurrency must be >= 1");
  const size_t colon = http_target.rfind(':');
  if (colon == std::string::npos) throw std::runtime_error("--http wants host:port");
  const std::string host = http_target.substr(0, colon), port = http_target.substr(colon + 1);
  auto stub =
      v1::Mlra::NewStub(grpc::CreateChannel(grpc_target, grpc::InsecureChannelCredentials()));
  LoadReport report;
  report.protocol = "http";
  report.options = options;
  LoadPlan plan = make_load_plan(options, fetch_model_info(*stub, grpc_target));
  report.streams = std::move(plan.records);

  net::io_context ioc;
  auto guard = net::make_work_guard(ioc);
  tcp::resolver resolver(ioc);
  const tcp::resolver::results_type endpoints = resolver.resolve(host, port);
  std::vector<std::thread> threads;
  for (int i = 0; i < std::max(1, options.channels); ++i) threads.emplace_back([&] { ioc.run(); });

  const int32_t total = static_cast<int32_t>(report.streams.size());
  StreamTracker counter;
  const Clock::time_point start = Clock::now();
  for (int32_t i = 0; i < total; ++i) {
    counter.wait_below(options.concurrency);
    std::make_shared<HttpStream>(ioc, endpoints, host, request_body(plan.requests[size_t(i)]),
                                 report.streams[size_t(i)], counter, options.stream_deadline)
        ->start();
  }
  const bool all_done =
      counter.wait_all(total, Clock::now() + options.stream_deadline + std::chrono::seconds(30));
  report.wall_s = std::chrono::duration<double>(Clock::now() - start).count();
  guard.reset();
  ioc.stop();
  for (std::thread& t : threads) t.join();
  check_streams(report);
  if (options.check_cache_free && all_done) check_cache_free(*stub, report);
  return report;
}

}  // namespace mlra
