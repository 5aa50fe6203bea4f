// Control channel between the TP frontend and one worker process: a connected Unix-domain stream
// socket carrying length-prefixed binary messages {magic, type, step, payload size} + payload.
// Lockstep is explicit: every reply carries the step number of the request it answers, and a
// reader that sees another number treats it as a fatal protocol error. Sends never raise SIGPIPE.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "engine/model_runner.h"
#include "engine/runner_config.h"
#include "engine/sampling_batch.h"
#include "models/step_batch.h"

namespace mlra {

enum class MessageType : uint32_t {
  kInit = 1,  // frontend -> worker: WorkerInit
  kReady,     // worker -> frontend: RankInfo
  kNcclId,    // rank 0 -> frontend -> other ranks: the opaque NCCL unique id bytes
  kStep,      // frontend -> worker: StepMessage (the plan; rank 0's also says how to answer)
  kLogits,    // rank 0 -> frontend: [rows, vocab] float32 (raw-logits steps only)
  kAck,       // ranks > 0 -> frontend: step done
  kShutdown,  // frontend -> worker: exit cleanly
  kError,     // worker -> frontend: UTF-8 text, the worker exits afterwards
  kTokens,    // rank 0 -> frontend: SampledTokens (ids, and logprobs where asked)
  kAllocate,  // frontend -> worker: int64 page count for a GPU-sized cache; answered by Ack
};
const char* message_type_name(MessageType type);

inline constexpr uint32_t kControlMagic = 0x4d4c5241;  // "MLRA"

struct MessageHeader {
  uint32_t magic = kControlMagic;
  MessageType type = MessageType::kError;
  int64_t step = 0;
  uint64_t payload_size = 0;
};
static_assert(sizeof(MessageHeader) == 24);

struct Message {
  MessageType type = MessageType::kError;
  int64_t step = 0;
  std::vector<char> payload;
};

// The peer closed its end (process exit or crash) or the socket failed.
struct ChannelClosed : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// No complete message arrived before the deadline.
struct ChannelTimeout : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// Bad magic, unexpected type or a step number that does not match.
struct ProtocolError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

using Clock = std::chrono::steady_clock;

// Owns one end of a socketpair.
class ControlChannel {
 public:
  ControlChannel() = default;
  explicit ControlChannel(int fd) : fd_(fd) {}
  ~ControlChannel();
  ControlChannel(ControlChannel&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  ControlChannel& operator=(ControlChannel&& other) noexcept;
  ControlChannel(const ControlChannel&) = delete;
  ControlChannel& operator=(const ControlChannel&) = delete;

  int fd() const { return fd_; }
  void close();

  // Throws ChannelClosed when the peer is gone (EPIPE/ECONNRESET), ChannelTimeout when the peer
  // stops reading and the socket buffer stays full past `deadline`.
  void send(MessageType type, int64_t step, const void* payload, size_t size,
            Clock::time_point deadline = Clock::time_point::max());
  void send(MessageType type, int64_t step, const std::vector<char>& payload,
            Clock::time_point deadline = Clock::time_point::max()) {
    send(type, step, payload.data(), payload.size(), deadline);
  }
  // Blocks until a whole message arrived or `deadline` passed (ChannelTimeout); EOF throws
  // ChannelClosed.
  Message receive(Clock::time_point deadline);
  // receive() plus the lockstep check: the reply must have `step` and one of the two types (an
  // Error message becomes a ProtocolError carrying the worker's text).
  Message expect(Clock::time_point deadline, int64_t step, MessageType type, MessageType alt_type);
  // The same check on the header only, leaving the payload in the socket for read_payload():
  // lets large payloads (logits) land directly in the caller's buffer.
  MessageHeader expect_header(Clock::time_point deadline, int64_t step, MessageType type,
                              MessageType alt_type);
  void read_payload(void* dst, size_t n, Clock::time_point deadline) {
    read_exact(static_cast<char*>(dst), n, deadline);
  }

 private:
  MessageHeader read_header(Clock::time_point deadline);
  void read_exact(char* dst, size_t n, Clock::time_point deadline);
  int fd_ = -1;
};

// Creates a connected AF_UNIX stream socketpair, both ends close-on-exec: {frontend, worker}.
std::pair<int, int> make_socket_pair();

// Little-endian-agnostic (same host) append-only byte writer and bounds-checked reader.
class ByteWriter {
 public:
  template <class T>
  void put(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    const char* p = reinterpret_cast<const char*>(&v);
    buf_.insert(buf_.end(), p, p + sizeof(T));
  }
  template <class T>
  void put_vector(const std::vector<T>& v) {
    put<uint64_t>(v.size());
    const char* p = reinterpret_cast<const char*>(v.data());
    buf_.insert(buf_.end(), p, p + v.size() * sizeof(T));
  }
  void put_string(std::string_view s) {
    put<uint64_t>(s.size());
    buf_.insert(buf_.end(), s.begin(), s.end());
  }
  std::vector<char>& bytes() { return buf_; }

 private:
  std::vector<char> buf_;
};

class ByteReader {
 public:
  ByteReader(const char* data, size_t size) : p_(data), end_(data + size) {}
  explicit ByteReader(const std::vector<char>& v) : ByteReader(v.data(), v.size()) {}
  template <class T>
  T get() {
    T v;
    std::memcpy(&v, take(sizeof(T)), sizeof(T));
    return v;
  }
  template <class T>
  std::vector<T> get_vector() {
    const uint64_t n = get<uint64_t>();
    if (n > uint64_t(end_ - p_) / sizeof(T))
      throw ProtocolError("message: vector overruns payload");
    std::vector<T> v(n);
    std::memcpy(v.data(), take(n * sizeof(T)), n * sizeof(T));
    return v;
  }
  std::string get_string() {
    const uint64_t n = get<uint64_t>();
    const char* p = take(n);
    return std::string(p, n);
  }
  bool done() const { return p_ == end_; }

 private:
  const char* take(size_t n) {
    if (n > size_t(end_ - p_)) throw ProtocolError("message: payload too short");
    const char* p = p_;
    p_ += n;
    return p;
  }
  const char* p_;
  const char* end_;
};

// What a worker needs to build its rank of the model: the runner's config, whole (sent as its
// JSON, engine/runner_config.h), and the CPU all-reduce segment. The rank comes from argv.
struct WorkerInit {
  RunnerConfig config;
  std::string shm_name;  // shared-memory segment of CPU and host-staged ranks (empty for NCCL)
};

// What a worker answers a Step with: ranks > 0 always Ack; rank 0 samples (Tokens: only ids
// and asked-for logprobs travel back) or, for raw-logits steps, sends the logits.
enum class StepReply : uint8_t { kAck = 0, kTokens = 1, kLogits = 2 };

// The payload of a Step message: the plan every rank runs, plus, on rank 0 when it samples, the
// per-row sampling parameters and penalty history (nothing the other ranks do not need).
struct StepMessage {
  StepBatch step;
  StepReply reply = StepReply::kAck;
  SamplingBatch sampling;  // rows only when reply == kTokens
};

std::vector<char> encode(const WorkerInit& m);
std::vector<char> encode(const RankInfo& m);
std::vector<char> encode(const StepBatch& m);
// `sampling` is written only for StepReply::kTokens.
std::vector<char> encode_step_message(const StepBatch& step, StepReply reply,
                                      const SamplingBatch* sampling);
std::vector<char> encode(const SampledTokens& m);
WorkerInit decode_worker_init(const std::vector<char>& payload);
RankInfo decode_rank_info(const std::vector<char>& payload);
StepBatch decode_step_batch(const std::vector<char>& payload);
StepMessage decode_step_message(const std::vector<char>& payload);
SampledTokens decode_sampled_tokens(const std::vector<char>& payload);

}  // namespace mlra
