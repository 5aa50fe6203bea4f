// MetricsEndpoint: a one-thread poll() HTTP/1.1 listener that answers GET /metrics with the
// registry in the Prometheus text format and everything else with a short fixed response.
// Every response closes its connection (no keep-alive), so a connection's whole life is: read
// one request head (bounded in size and time), answer, close.
#include "server/metrics_endpoint.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <prometheus/text_serializer.h>
#include <spdlog/spdlog.h>

namespace mlra {
namespace {

using Clock = std::chrono::steady_clock;

std::string response(int status, const char* reason, const std::string& content_type,
                     const std::string& body) {
  return fmt::format(
      "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
      status, reason, content_type, body.size(), body);
}

std::string plain(int status, const char* reason) {
  return response(status, reason, "text/plain", std::string(reason) + "\n");
}

// Writes all of `data` with a bounded wait: the socket is made blocking with a send timeout, so
// a client that stops reading costs at most that long.
void send_all(int fd, const std::string& data) {
  const int flags = ::fcntl(fd, F_GETFL);
  ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  timeval tv{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    sent += size_t(n);
  }
}

int bind_listener(const std::string& host, int port, int* bound_port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0)
    throw std::runtime_error(
        fmt::format("metrics endpoint: cannot resolve {}: {}", host, gai_strerror(rc)));
  std::string why = "no address";
  int fd = -1;
  for (addrinfo* a = found; a != nullptr && fd < 0; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
    if (fd < 0) {
      why = std::strerror(errno);
      continue;
    }
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd, 128) != 0) {
      why = std::strerror(errno);
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(found);
  if (fd < 0)
    throw std::runtime_error(
        fmt::format("metrics endpoint: cannot listen on {}:{} ({})", host, port, why));
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  *bound_port = addr.ss_family == AF_INET6
                    ? ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port)
                    : ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  return fd;
}

}  // namespace

class MetricsEndpoint::Listener {
 public:
  Listener(const MetricsEndpointOptions& o, std::function<std::string()> scrape)
      : options_(o), scrape_(std::move(scrape)) {
    listen_fd_ = bind_listener(o.host, o.port, &port_);
    if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) {
      ::close(listen_fd_);
      throw std::runtime_error(std::string("metrics endpoint: pipe: ") + std::strerror(errno));
    }
    thread_ = std::thread([this] { run(); });
  }
  ~Listener() {
    stop_ = true;
    const char byte = 1;
    (void)!::write(wake_[1], &byte, 1);
    thread_.join();
    for (const Connection& c : connections_) ::close(c.fd);
    ::close(listen_fd_);
    ::close(wake_[0]);
    ::close(wake_[1]);
  }
  int port() const { return port_; }

 private:
  struct Connection {
    int fd;
    std::string head;  // request bytes received so far
    Clock::time_point deadline;
  };

  void run() {
    while (!stop_) {
      std::vector<pollfd> fds = {{wake_[0], POLLIN, 0}, {listen_fd_, POLLIN, 0}};
      auto next = Clock::now() + std::chrono::seconds(1);
      for (const Connection& c : connections_) {
        fds.push_back({c.fd, POLLIN, 0});
        next = std::min(next, c.deadline);
      }
      const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next - Clock::now());
      const int rc = ::poll(fds.data(), fds.size(), int(std::max<int64_t>(wait.count() + 1, 0)));
      if (rc < 0 && errno != EINTR) {
        spdlog::error("metrics endpoint: poll: {}", std::strerror(errno));
        return;
      }
      if (stop_) return;
      std::vector<Connection> kept;
      const auto now = Clock::now();
      for (size_t i = 0; i < connections_.size(); ++i) {
        Connection& c = connections_[i];
        const bool done = (fds[i + 2].revents != 0 && !read_and_answer(c)) || now >= c.deadline;
        if (done) {
          ::close(c.fd);
        } else {
          kept.push_back(std::move(c));
        }
      }
      connections_.swap(kept);
      if (fds[1].revents & POLLIN) accept_all();
    }
  }

  void accept_all() {
    for (;;) {
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) return;  // EAGAIN: drained (or a transient error: poll tells us again)
      if (int(connections_.size()) >= options_.max_connections) {
        ::close(fd);
        continue;
      }
      connections_.push_back(
          {fd, {}, Clock::now() + std::chrono::milliseconds(options_.request_timeout_ms)});
    }
  }

  // Reads what is there; answers once the request head is complete. False: close it now.
  bool read_and_answer(Connection& c) {
    char buf[4096];
    for (;;) {
      const ssize_t n = ::recv(c.fd, buf, sizeof(buf), 0);
      if (n == 0) return false;  // the client closed
      if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
      c.head.append(buf, size_t(n));
      if (int64_t(c.head.size()) > options_.max_request_bytes) {
        send_all(c.fd, plain(413, "Request Too Large"));
        return false;
      }
      if (c.head.find("\r\n\r\n") != std::string::npos) {
        send_all(c.fd, answer(c.head));
        return false;
      }
    }
  }

  std::string answer(const std::string& head) {
    const std::string line = head.substr(0, head.find("\r\n"));
    const size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
    if (sp1 == std::string::npos || sp2 == sp1 || line.compare(sp2 + 1, 7, "HTTP/1.") != 0)
      return plain(400, "Bad Request");
    const std::string method = line.substr(0, sp1);
    const std::string target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    const std::string path = target.substr(0, target.find('?'));
    if (path != "/metrics") return plain(404, "Not Found");
    if (method != "GET") return plain(405, "Method Not Allowed");
    try {
      return response(200, "OK", "text/plain; version=0.0.4; charset=utf-8", scrape_());
    } catch (const std::exception& e) {
      spdlog::error("metrics endpoint: scrape failed: {}", e.what());
      return plain(500, "Internal Server Error");
    }
  }

  MetricsEndpointOptions options_;
  std::function<std::string()> scrape_;
  int listen_fd_ = -1;
  int port_ = 0;
  int wake_[2] = {-1, -1};
  std::atomic<bool> stop_{false};
  std::vector<Connection> connections_;  // owned by the listener thread
  std::thread thread_;
};

MetricsEndpoint::MetricsEndpoint(const MetricsEndpointOptions& o,
                                 std::shared_ptr<prometheus::Registry> registry,
                                 std::function<void()> refresh)
    : registry_(std::move(registry)), refresh_(std::move(refresh)) {
  if (o.max_connections < 1 || o.request_timeout_ms < 1 || o.max_request_bytes < 64)
    throw std::invalid_argument("metrics endpoint: limits must be positive");
  listener_ = std::make_unique<Listener>(o, [this] { return scrape(); });
  port_ = listener_->port();
}

MetricsEndpoint::~MetricsEndpoint() = default;

std::string MetricsEndpoint::scrape() {
  if (refresh_) refresh_();
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

}  // namespace mlra
