// One HTTP request and its answer, as a handler sees it. A handler either answers at once
// (respond) or later: from any thread it may hand work to the connection's strand (post), start
// a streamed answer (start_stream, chunked), send() pieces one write at a time (the next send
// waits for on_drained) and end it (finish_stream). When the client disconnects or a write fails
// before the answer is complete, on_gone runs once on the strand. Every method except post()
// must be called on the strand.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

namespace mlra::http {

using Request = boost::beast::http::request<boost::beast::http::string_body>;

class Exchange {
 public:
  virtual ~Exchange() = default;

  virtual const Request& request() const = 0;
  virtual void post(std::function<void()> work) = 0;

  // A complete response (Content-Length); ends the exchange.
  virtual void respond(unsigned status, const std::string& content_type, std::string body) = 0;
  // Headers of a chunked response; then send() pieces and finish_stream().
  virtual void start_stream(unsigned status, const std::string& content_type) = 0;
  // Writes one piece; false (and nothing written) while the previous one is still being written
  // or the client is gone.
  virtual bool send(std::string data) = 0;
  virtual bool writing() const = 0;
  virtual void finish_stream() = 0;
  virtual bool client_gone() const = 0;

  virtual void on_drained(std::function<void()> callback) = 0;  // after each send() completes
  virtual void on_gone(std::function<void()> callback) = 0;
};

using Handler = std::function<void(std::shared_ptr<Exchange>)>;

}  // namespace mlra::http
