// Control channel: framing over a blocking-free (poll + MSG_DONTWAIT) AF_UNIX stream socket, and
// the binary encodings of the messages. Both ends run on the same host and binary, so values are
// written in native byte order; the magic catches a desynchronised stream.
#include "engine/control_channel.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

namespace mlra {
namespace {

constexpr uint64_t kMaxPayload = 4ULL << 30;

// Milliseconds left until `deadline` for poll(): -1 (forever) for time_point::max().
int poll_timeout_ms(Clock::time_point deadline) {
  if (deadline == Clock::time_point::max()) return -1;
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return int(std::clamp<int64_t>(left.count() + 1, 0, INT_MAX));
}

std::string errno_text(const char* what) {
  return std::string(what) + ": " + std::strerror(errno);
}

}  // namespace

const char* message_type_name(MessageType type) {
  switch (type) {
    case MessageType::kInit:
      return "Init";
    case MessageType::kReady:
      return "Ready";
    case MessageType::kNcclId:
      return "NcclId";
    case MessageType::kStep:
      return "Step";
    case MessageType::kLogits:
      return "Logits";
    case MessageType::kAck:
      return "Ack";
    case MessageType::kShutdown:
      return "Shutdown";
    case MessageType::kError:
      return "Error";
    case MessageType::kTokens:
      return "Tokens";
    case MessageType::kAllocate:
      return "Allocate";
  }
  return "?";
}

ControlChannel::~ControlChannel() {
  close();
}

ControlChannel& ControlChannel::operator=(ControlChannel&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

void ControlChannel::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void ControlChannel::send(MessageType type, int64_t step, const void* payload, size_t size,
                          Clock::time_point deadline) {
  if (fd_ < 0) throw ChannelClosed("control channel is closed");
  MessageHeader header{kControlMagic, type, step, size};
  iovec iov[2] = {{&header, sizeof(header)}, {const_cast<void*>(payload), size}};
  size_t total = sizeof(header) + size, sent = 0;
  while (sent < total) {
    // Skip what was already sent across the two buffers.
    size_t skip = sent;
    iovec cur[2];
    int n = 0;
    for (const iovec& v : iov) {
      if (skip >= v.iov_len) {
        skip -= v.iov_len;
        continue;
      }
      cur[n++] = {static_cast<char*>(v.iov_base) + skip, v.iov_len - skip};
      skip = 0;
    }
    msghdr msg{};
    msg.msg_iov = cur;
    msg.msg_iovlen = size_t(n);
    const ssize_t r = ::sendmsg(fd_, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r > 0) {
      sent += size_t(r);
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd_, POLLOUT, 0};
      const int pr = ::poll(&p, 1, poll_timeout_ms(deadline));
      if (pr == 0) throw ChannelTimeout("control channel: send timed out");
      if (pr < 0 && errno != EINTR) throw ChannelClosed(errno_text("control channel poll"));
      if (pr > 0 && (p.revents & (POLLERR | POLLHUP)) && !(p.revents & POLLOUT))
        throw ChannelClosed("control channel: peer closed");
      continue;
    }
    throw ChannelClosed(errno_text("control channel send"));
  }
}

void ControlChannel::read_exact(char* dst, size_t n, Clock::time_point deadline) {
  size_t got = 0;
  while (got < n) {
    const ssize_t r = ::recv(fd_, dst + got, n - got, MSG_DONTWAIT);
    if (r > 0) {
      got += size_t(r);
      continue;
    }
    if (r == 0) throw ChannelClosed("control channel: peer closed the connection");
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      throw ChannelClosed(errno_text("control channel recv"));
    pollfd p{fd_, POLLIN, 0};
    const int pr = ::poll(&p, 1, poll_timeout_ms(deadline));
    if (pr == 0) throw ChannelTimeout("control channel: no reply before the deadline");
    if (pr < 0 && errno != EINTR) throw ChannelClosed(errno_text("control channel poll"));
  }
}

MessageHeader ControlChannel::read_header(Clock::time_point deadline) {
  if (fd_ < 0) throw ChannelClosed("control channel is closed");
  MessageHeader header;
  read_exact(reinterpret_cast<char*>(&header), sizeof(header), deadline);
  if (header.magic != kControlMagic) throw ProtocolError("control channel: bad magic");
  if (header.payload_size > kMaxPayload) throw ProtocolError("control channel: payload too large");
  return header;
}

Message ControlChannel::receive(Clock::time_point deadline) {
  const MessageHeader header = read_header(deadline);
  Message m;
  m.type = header.type;
  m.step = header.step;
  m.payload.resize(header.payload_size);
  read_exact(m.payload.data(), m.payload.size(), deadline);
  return m;
}

MessageHeader ControlChannel::expect_header(Clock::time_point deadline, int64_t step,
                                            MessageType type, MessageType alt_type) {
  const MessageHeader header = read_header(deadline);
  if (header.type == MessageType::kError) {
    std::string text(header.payload_size, '\0');
    read_exact(text.data(), text.size(), deadline);
    throw ProtocolError(text);
  }
  if (header.type != type && header.type != alt_type)
    throw ProtocolError(std::string("control channel: expected ") + message_type_name(type) +
                        ", got " + message_type_name(header.type));
  if (header.step != step)
    throw ProtocolError("control channel: lockstep violated: reply for step " +
                        std::to_string(header.step) + " while waiting for step " +
                        std::to_string(step));
  return header;
}

Message ControlChannel::expect(Clock::time_point deadline, int64_t step, MessageType type,
                               MessageType alt_type) {
  const MessageHeader header = expect_header(deadline, step, type, alt_type);
  Message m;
  m.type = header.type;
  m.step = header.step;
  m.payload.resize(header.payload_size);
  read_exact(m.payload.data(), m.payload.size(), deadline);
  return m;
}

std::pair<int, int> make_socket_pair() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
    throw ChannelClosed(errno_text("socketpair"));
  return {fds[0], fds[1]};
}

namespace {

template <class T>
struct IsVector : std::false_type {};
template <class T>
struct IsVector<std::vector<T>> : std::true_type {};

// Each message's fields are listed once (the *_fields functions below) and walked by a
// FieldWriter (const message) or a FieldReader (mutable message), so the two directions of an
// encoding cannot drift apart. Strings and vectors carry a u64 length, bools one byte, the rest
// their native bytes.
struct FieldWriter {
  ByteWriter w;
  template <class... T>
  void operator()(const T&... v) {
    (one(v), ...);
  }
  template <class T>
  void one(const T& v) {
    if constexpr (std::is_same_v<T, std::string>)
      w.put_string(v);
    else if constexpr (IsVector<T>::value)
      w.put_vector(v);
    else if constexpr (std::is_same_v<T, bool>)
      w.put<uint8_t>(v ? 1 : 0);
    else
      w.put(v);
  }
};

struct FieldReader {
  ByteReader r;
  template <class... T>
  void operator()(T&... v) {
    (one(v), ...);
  }
  template <class T>
  void one(T& v) {
    if constexpr (std::is_same_v<T, std::string>)
      v = r.get_string();
    else if constexpr (IsVector<T>::value)
      v = r.get_vector<typename T::value_type>();
    else if constexpr (std::is_same_v<T, bool>)
      v = r.get<uint8_t>() != 0;
    else
      v = r.get<T>();
  }
};

template <class Io, class M>
void ready_fields(Io& io, M& m) {
  io(m.rank, m.device, m.pid, m.backend, m.weight_bytes, m.cache_bytes_per_token,
     m.cache_values_per_token_per_layer, m.num_pages, m.communicator);
}

template <class Io, class M>
void step_fields(Io& io, M& m) {
  io(m.step, m.tokens, m.positions, m.token_seq, m.slots, m.page_indptr, m.page_indices,
     m.logit_rows);
}

template <class Io, class M>
void sampling_fields(Io& io, M& m) {
  io(m.rows, m.penalty_indptr, m.penalty_tokens, m.penalty_counts);
}

template <class Io, class M>
void tokens_fields(Io& io, M& m) {
  io(m.tokens, m.logprobs, m.top_indptr, m.top_tokens, m.top_logprobs);
}

// Encodes one message with its field list.
template <class M, class Fields>
std::vector<char> write_message(const M& m, Fields fields) {
  FieldWriter io;
  fields(io, m);
  return std::move(io.w.bytes());
}

// Decodes a whole payload into one message; `what` names it in errors.
template <class M, class Fields>
M read_message(const std::vector<char>& payload, Fields fields, const char* what) {
  FieldReader io{ByteReader(payload)};
  M m;
  fields(io, m);
  if (!io.r.done()) throw ProtocolError(std::string(what) + ": trailing bytes");
  return m;
}

// Runs a message's own consistency check, reporting a failure as a protocol error.
template <class Check>
void check_as_protocol(const char* what, Check check) {
  try {
    check();
  } catch (const std::invalid_argument& e) {
    throw ProtocolError(std::string(what) + ": " + e.what());
  }
}

}  // namespace

std::vector<char> encode(const WorkerInit& m) {
  FieldWriter io;
  io(to_json(m.config).dump(), m.shm_name);
  return std::move(io.w.bytes());
}

WorkerInit decode_worker_init(const std::vector<char>& payload) {
  FieldReader io{ByteReader(payload)};
  std::string config;
  WorkerInit m;
  io(config, m.shm_name);
  if (!io.r.done()) throw ProtocolError("Init: trailing bytes");
  const nlohmann::json j = nlohmann::json::parse(config, nullptr, false);
  if (j.is_discarded()) throw ProtocolError("Init: the runner config is not JSON");
  try {
    m.config = runner_config_from_json(j, std::filesystem::current_path());
  } catch (const ConfigError& e) {
    throw ProtocolError(std::string("Init: ") + e.what());
  }
  return m;
}

std::vector<char> encode(const RankInfo& m) {
  return write_message(m, [](auto& io, auto& x) { ready_fields(io, x); });
}

RankInfo decode_rank_info(const std::vector<char>& payload) {
  return read_message<RankInfo>(
      payload, [](auto& io, auto& x) { ready_fields(io, x); }, "Ready");
}

std::vector<char> encode(const StepBatch& m) {
  return write_message(m, [](auto& io, auto& x) { step_fields(io, x); });
}

StepBatch decode_step_batch(const std::vector<char>& payload) {
  return read_message<StepBatch>(
      payload, [](auto& io, auto& x) { step_fields(io, x); }, "Step");
}

// A step message: the step, the reply kind, and (for kTokens) the sampling rows.
std::vector<char> encode_step_message(const StepBatch& step, StepReply reply,
                                      const SamplingBatch* sampling) {
  if (reply == StepReply::kTokens && sampling == nullptr)
    throw std::invalid_argument("a sampling step message needs its sampling batch");
  FieldWriter io;
  step_fields(io, step);
  io(reply);
  if (reply == StepReply::kTokens) sampling_fields(io, *sampling);
  return std::move(io.w.bytes());
}

StepMessage decode_step_message(const std::vector<char>& payload) {
  FieldReader io{ByteReader(payload)};
  StepMessage m;
  step_fields(io, m.step);
  io(m.reply);
  if (m.reply != StepReply::kAck && m.reply != StepReply::kTokens && m.reply != StepReply::kLogits)
    throw ProtocolError("Step: unknown reply kind");
  if (m.reply == StepReply::kTokens) {
    sampling_fields(io, m.sampling);
    check_as_protocol("Step", [&] { m.sampling.check(); });
    if (m.sampling.size() != int64_t(m.step.logit_rows.size()))
      throw ProtocolError("Step: sampling rows differ from logit rows");
  }
  if (!io.r.done()) throw ProtocolError("Step: trailing bytes");
  return m;
}

std::vector<char> encode(const SampledTokens& m) {
  return write_message(m, [](auto& io, auto& x) { tokens_fields(io, x); });
}

SampledTokens decode_sampled_tokens(const std::vector<char>& payload) {
  SampledTokens m = read_message<SampledTokens>(
      payload, [](auto& io, auto& x) { tokens_fields(io, x); }, "Tokens");
  check_as_protocol("Tokens", [&] { m.check(m.size()); });
  return m;
}

}  // namespace mlra
