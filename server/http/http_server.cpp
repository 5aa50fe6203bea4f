// Server: acceptor + I/O threads + the connection list (for the cap and for stop()); Session:
// one connection's state machine on its strand: read head -> check limits -> (100 Continue) ->
// read body -> handler -> write (whole or chunked) -> next request or close. While a handler
// is answering, a read on the socket watches for the client going away.
#include "server/http/http_server.h"

#include <atomic>
#include <list>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

namespace mlra::http {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;
using boost::system::error_code;

// The OpenAI error shape, plain enough for any other client too.
std::string error_body(unsigned status, const std::string& message) {
  nlohmann::json error = {{"message", message},
                          {"type", status >= 500 ? "server_error" : "invalid_request_error"},
                          {"param", nullptr},
                          {"code", status}};
  return nlohmann::json{{"error", std::move(error)}}.dump(-1, ' ', false,
                                                          nlohmann::json::error_handler_t::replace);
}

}  // namespace

class Session;

struct Server::State : std::enable_shared_from_this<Server::State> {
  ServerOptions options;
  Handler handler;
  net::io_context ioc;
  tcp::acceptor acceptor{ioc};
  std::vector<std::thread> threads;
  int port = 0;
  mutable std::mutex mutex;
  std::list<std::weak_ptr<Session>> sessions;
  size_t open = 0;
  bool stopped = false;

  void accept();
  void admit(tcp::socket socket);
};

class Session final : public Exchange, public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, std::shared_ptr<Server::State> server)
      : socket_(std::move(socket)), timer_(socket_.get_executor()), state_(std::move(server)) {}
  ~Session() override {
    std::lock_guard lock(state_->mutex);
    state_->sessions.erase(self_in_list_);
    --state_->open;
  }

  void start(std::list<std::weak_ptr<Session>>::iterator self_in_list) {
    self_in_list_ = self_in_list;
    net::dispatch(socket_.get_executor(), [s = shared_from_this()] { s->read_request(); });
  }
  bool waiting_for_request() const { return waiting_.load(); }
  void close_from_outside() {
    net::post(socket_.get_executor(), [s = shared_from_this()] { s->close(); });
  }

  // Exchange.
  const Request& request() const override { return request_; }
  void post(std::function<void()> work) override {
    net::post(socket_.get_executor(), std::move(work));
  }
  void respond(unsigned status, const std::string& content_type, std::string body) override;
  void start_stream(unsigned status, const std::string& content_type) override;
  bool send(std::string data) override;
  bool writing() const override { return writing_; }
  void finish_stream() override;
  bool client_gone() const override { return gone_; }
  void on_drained(std::function<void()> callback) override { drained_ = std::move(callback); }
  void on_gone(std::function<void()> callback) override { gone_callback_ = std::move(callback); }

 private:
  void read_request();
  void on_header(error_code ec);
  void read_body();
  void on_body(error_code ec);
  void refuse(unsigned status, const std::string& message);  // answers, then closes
  void after_write(error_code ec, bool last);
  void next_request();
  void start_watch();
  void on_watch(error_code ec, size_t n);
  void client_went_away();
  void arm_timer(std::chrono::milliseconds timeout);
  void disarm_timer();
  void close();

  tcp::socket socket_;
  net::steady_timer timer_;
  uint64_t timer_generation_ = 0;
  std::shared_ptr<Server::State> state_;  // kept alive by its sessions (they use its lists)
  Server::State& server_ = *state_;
  std::list<std::weak_ptr<Session>>::iterator self_in_list_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  Request request_;
  bool first_request_ = true;
  std::atomic<bool> waiting_{true};
  bool keep_alive_ = false;
  bool answering_ = false;  // a handler owns the exchange and has not completed it
  bool writing_ = false;
  bool streaming_ = false;
  bool finish_pending_ = false;
  bool watching_ = false;
  bool gone_ = false;
  bool closed_ = false;
  std::string out_;
  std::shared_ptr<void> message_;  // the response being written
  std::optional<bhttp::response<bhttp::empty_body>> stream_head_;
  std::optional<bhttp::response_serializer<bhttp::empty_body>> stream_serializer_;
  std::function<void()> drained_;
  std::function<void()> gone_callback_;
};

void Session::read_request() {
  if (closed_) return;
  waiting_ = true;
  answering_ = streaming_ = finish_pending_ = gone_ = false;
  drained_ = nullptr;
  gone_callback_ = nullptr;
  parser_.emplace();
  parser_->header_limit(static_cast<uint32_t>(server_.options.max_header_bytes));
  parser_->body_limit(server_.options.max_body_bytes);
  arm_timer(first_request_ ? server_.options.request_timeout : server_.options.idle_timeout);
  first_request_ = false;
  bhttp::async_read_header(socket_, buffer_, *parser_,
                           [s = shared_from_this()](error_code ec, size_t) { s->on_header(ec); });
}

void Session::on_header(error_code ec) {
  waiting_ = false;
  if (ec == bhttp::error::header_limit) return refuse(431, "request head too large");
  if (ec == bhttp::error::body_limit) {
    return refuse(413, fmt::format("request body too large (at most {} bytes)",
                                   server_.options.max_body_bytes));
  }
  if (ec == bhttp::error::end_of_stream || ec == net::error::eof || closed_) return close();
  if (ec == net::error::operation_aborted) return close();
  if (ec) return refuse(400, "malformed HTTP request: " + ec.message());
  arm_timer(server_.options.request_timeout);
  const auto& head = parser_->get();
  const auto expect = head[bhttp::field::expect];
  if (!expect.empty()) {
    if (!beast::iequals(expect, "100-continue")) return refuse(417, "unsupported Expect header");
    if (!parser_->is_done()) {
      auto cont = std::make_shared<bhttp::response<bhttp::empty_body>>(bhttp::status::continue_,
                                                                       head.version());
      bhttp::async_write(socket_, *cont, [s = shared_from_this(), cont](error_code e, size_t) {
        if (e) return s->close();
        s->read_body();
      });
      return;
    }
  }
  read_body();
}

void Session::read_body() {
  bhttp::async_read(socket_, buffer_, *parser_,
                    [s = shared_from_this()](error_code ec, size_t) { s->on_body(ec); });
}

void Session::on_body(error_code ec) {
  if (ec == bhttp::error::body_limit) {
    return refuse(413, fmt::format("request body too large (at most {} bytes)",
                                   server_.options.max_body_bytes));
  }
  if (ec == net::error::operation_aborted || closed_) return close();
  if (ec == net::error::eof || ec == bhttp::error::partial_message) return close();
  if (ec) return refuse(400, "malformed HTTP request: " + ec.message());
  disarm_timer();
  request_ = parser_->release();
  parser_.reset();
  keep_alive_ = request_.keep_alive();
  answering_ = true;
  try {
    server_.handler(shared_from_this());
  } catch (const std::exception& e) {
    spdlog::error("http: handler of {} failed: {}", std::string(request_.target()), e.what());
    if (answering_ && !streaming_ && !writing_)
      respond(500, "application/json", error_body(500, "internal error"));
  }
  if (answering_ && !closed_) start_watch();
}

void Session::refuse(unsigned status, const std::string& message) {
  keep_alive_ = false;  // the rest of the stream cannot be trusted (or is a body we skip)
  answering_ = true;
  respond(status, "application/json", error_body(status, message));
}

void Session::respond(unsigned status, const std::string& content_type, std::string body) {
  if (closed_ || gone_) return;
  auto message = std::make_shared<bhttp::response<bhttp::string_body>>(
      static_cast<bhttp::status>(status), request_.version() ? request_.version() : 11);
  message->set(bhttp::field::content_type, content_type);
  message->keep_alive(keep_alive_);
  message->body() = std::move(body);
  message->prepare_payload();
  message_ = message;
  writing_ = true;
  arm_timer(server_.options.write_timeout);
  bhttp::async_write(socket_, *message,
                     [s = shared_from_this()](error_code ec, size_t) { s->after_write(ec, true); });
}

void Session::start_stream(unsigned status, const std::string& content_type) {
  if (closed_ || gone_) return;
  streaming_ = true;
  stream_head_.emplace(static_cast<bhttp::status>(status), request_.version());
  stream_head_->set(bhttp::field::content_type, content_type);
  stream_head_->set(bhttp::field::cache_control, "no-cache");
  stream_head_->keep_alive(keep_alive_);
  stream_head_->chunked(true);
  stream_serializer_.emplace(*stream_head_);
  writing_ = true;
  arm_timer(server_.options.write_timeout);
  bhttp::async_write_header(
      socket_, *stream_serializer_,
      [s = shared_from_this()](error_code ec, size_t) { s->after_write(ec, false); });
}

bool Session::send(std::string data) {
  if (closed_ || gone_ || writing_ || !streaming_) return false;
  out_ = std::move(data);
  writing_ = true;
  arm_timer(server_.options.write_timeout);
  net::async_write(socket_, bhttp::make_chunk(net::buffer(out_)),
                   [s = shared_from_this()](error_code ec, size_t) { s->after_write(ec, false); });
  return true;
}

void Session::finish_stream() {
  if (closed_ || gone_) return;
  if (writing_) {
    finish_pending_ = true;
    return;
  }
  writing_ = true;
  arm_timer(server_.options.write_timeout);
  net::async_write(socket_, bhttp::make_chunk_last(),
                   [s = shared_from_this()](error_code ec, size_t) { s->after_write(ec, true); });
}

void Session::after_write(error_code ec, bool last) {
  writing_ = false;
  disarm_timer();
  if (ec) return client_went_away();
  if (!last) {
    if (finish_pending_) return finish_stream();
    if (drained_) {
      std::function<void()> callback = drained_;  // it may replace itself
      callback();
    }
    return;
  }
  answering_ = false;
  message_.reset();
  stream_serializer_.reset();
  stream_head_.reset();
  if (!keep_alive_) return close();
  next_request();
}

void Session::next_request() {
  if (watching_) {
    socket_.cancel();  // on_watch sees the answer complete and reads the next request
    return;
  }
  read_request();
}

void Session::start_watch() {
  if (watching_ || closed_) return;
  watching_ = true;
  socket_.async_read_some(buffer_.prepare(4096), [s = shared_from_this()](error_code ec, size_t n) {
    s->on_watch(ec, n);
  });
}

void Session::on_watch(error_code ec, size_t n) {
  watching_ = false;
  buffer_.commit(n);  // pipelined bytes of the next request stay for the parser
  if (!answering_) {
    if (ec && ec != net::error::operation_aborted) return close();
    return read_request();
  }
  if (ec) return client_went_away();
  if (buffer_.size() < server_.options.max_header_bytes) start_watch();
}

void Session::client_went_away() {
  if (!gone_ && answering_) {
    gone_ = true;
    if (gone_callback_) {
      std::function<void()> callback = std::move(gone_callback_);
      callback();
    }
  }
  close();
}

void Session::arm_timer(std::chrono::milliseconds timeout) {
  const uint64_t generation = ++timer_generation_;
  timer_.expires_after(timeout);
  timer_.async_wait([s = shared_from_this(), generation](error_code ec) {
    if (ec || generation != s->timer_generation_) return;
    s->client_went_away();
  });
}

void Session::disarm_timer() {
  ++timer_generation_;
  timer_.cancel();
}

void Session::close() {
  if (closed_) return;
  closed_ = true;
  waiting_ = false;
  disarm_timer();
  error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
  if (answering_ && !gone_) client_went_away();
}

void Server::State::accept() {
  acceptor.async_accept(net::make_strand(ioc), [this](error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted) return;
    if (!ec) admit(std::move(socket));
    {
      std::lock_guard lock(mutex);
      if (stopped) return;
    }
    accept();
  });
}

void Server::State::admit(tcp::socket socket) {
  std::shared_ptr<Session> session;
  std::list<std::weak_ptr<Session>>::iterator where;
  {
    std::lock_guard lock(mutex);
    if (stopped) return;
    if (open >= options.max_connections) {
      // Make room by closing the longest-idle connection that is only waiting for a request.
      std::shared_ptr<Session> victim;
      for (const std::weak_ptr<Session>& w : sessions) {
        std::shared_ptr<Session> s = w.lock();
        if (s && s->waiting_for_request()) {
          victim = std::move(s);
          break;
        }
      }
      if (!victim) return;  // every connection is busy: this one is refused (closed)
      victim->close_from_outside();
    }
    session = std::make_shared<Session>(std::move(socket), shared_from_this());
    where = sessions.insert(sessions.end(), session);
    ++open;
  }
  session->start(where);
}

Server::Server(const ServerOptions& options, Handler handler) : state_(std::make_shared<State>()) {
  if (options.threads < 1 || options.max_connections < 1 || options.max_header_bytes < 64) {
    throw std::invalid_argument(
        "http server: threads, max_connections and limits must be positive");
  }
  State& s = *state_;
  s.options = options;
  s.handler = std::move(handler);
  error_code ec;
  tcp::resolver resolver(s.ioc);
  auto endpoints = resolver.resolve(options.host, std::to_string(options.port),
                                    tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec || endpoints.empty()) {
    throw std::runtime_error(
        fmt::format("http: cannot resolve {}: {}", options.host, ec.message()));
  }
  const tcp::endpoint endpoint = endpoints.begin()->endpoint();
  s.acceptor.open(endpoint.protocol(), ec);
  if (!ec) s.acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) s.acceptor.bind(endpoint, ec);
  if (!ec) s.acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    throw std::runtime_error(
        fmt::format("http: cannot listen on {}:{} ({})", options.host, options.port, ec.message()));
  }
  s.port = s.acceptor.local_endpoint().port();
  s.accept();
  for (int i = 0; i < options.threads; ++i) {
    s.threads.emplace_back([state = state_] {
      for (;;) {
        try {
          state->ioc.run();
          return;
        } catch (const std::exception& e) {
          spdlog::error("http: I/O thread: {}", e.what());
        }
      }
    });
  }
}

Server::~Server() {
  stop();
}

int Server::port() const {
  return state_->port;
}

size_t Server::connections() const {
  std::lock_guard lock(state_->mutex);
  return state_->open;
}

void Server::stop() {
  State& s = *state_;
  std::vector<std::shared_ptr<Session>> open;
  {
    std::lock_guard lock(s.mutex);
    if (s.stopped) return;
    s.stopped = true;
    for (const std::weak_ptr<Session>& w : s.sessions) {
      if (std::shared_ptr<Session> session = w.lock()) open.push_back(std::move(session));
    }
  }
  net::post(s.acceptor.get_executor(), [&s] {
    error_code ignored;
    s.acceptor.close(ignored);
  });
  for (const auto& session : open) session->close_from_outside();
  open.clear();
  // Give the closes a moment to run, then stop the loop whatever is left.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (std::chrono::steady_clock::now() < deadline && connections() > 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  s.ioc.stop();
  for (std::thread& t : s.threads) {
    if (t.joinable()) t.join();
  }
  // Run the aborted operations' handlers, so the sessions they hold are released.
  s.ioc.restart();
  s.ioc.poll();
}

}  // namespace mlra::http
