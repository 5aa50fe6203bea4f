// The two generation reactors over one base (admission, cancellation, the end of the call); they
// differ only in what they do with output: Generate writes each merged chunk, Complete collects.
#include "server/grpc_generation_call.h"

#include <memory>
#include <mutex>
#include <optional>

#include <fmt/format.h>
#include <grpcpp/server_context.h>

#include "proto/mlra.pb.h"

namespace mlra {

void serialize_message(const google::protobuf::Message& message, grpc::ByteBuffer* out) {
  bool own = false;
  grpc::SerializationTraits<google::protobuf::Message>::Serialize(message, out, &own);
}

grpc::Status undecodable(const char* message_name) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                      fmt::format("request is not a valid mlra.v1.{} (malformed protobuf, or a "
                                  "string field that is not UTF-8)",
                                  message_name));
}

namespace {

constexpr std::chrono::milliseconds kDeadlineSlack{100};

// Admission and bookkeeping shared by both reactors. Kept alive by `self_` until OnDone, and by
// any pump posted for it.
class CallBase : public std::enable_shared_from_this<CallBase> {
 public:
  CallBase(RequestGateway& gateway, grpc::CallbackServerContext* ctx,
           const grpc::ByteBuffer* request, const char* method)
      : gateway_(gateway), ctx_(ctx), raw_(*request) {
    outcome_.method = method;
  }
  virtual ~CallBase() = default;

  void start(std::shared_ptr<CallBase> self) {
    self_ = std::move(self);
    gateway_.post_admission([s = shared_from_this()] { s->admit(); });
  }

 protected:
  // Finish without output (refused before or by the engine).
  virtual void refuse(const grpc::Status& status) = 0;
  // Drains the channel while the reactor can take output; called with mutex_ not held.
  virtual void pump() = 0;

  void client_cancelled() {
    std::lock_guard lock(mutex_);
    // The client's own timer fires first and its cancel arrives just before the server's copy
    // of the deadline: a cancel that close to the deadline is the deadline passing.
    deadline_passed_ = ctx_->deadline() <= std::chrono::system_clock::now() + kDeadlineSlack;
    abandon_locked();
  }

  // The client is gone: cancel the engine request; output from now on is discarded.
  void abandon_locked() {
    if (client_gone_) return;
    client_gone_ = true;
    if (handle_) gateway_.engine().cancel(*handle_);
  }

  grpc::Status gone_status() const {
    if (slow_reader_) {
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          "the client read too slowly: request cancelled");
    }
    if (deadline_passed_) {
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "deadline exceeded");
    }
    return grpc::Status(grpc::StatusCode::CANCELLED, "request cancelled");
  }

  // Next merged output (mutex_ held); records timing, the final chunk and slow readers.
  std::optional<GenerationChunk> take_locked() {
    std::optional<GenerationChunk> chunk = channel_->take();
    if (!chunk) return chunk;
    if (outcome_.ttft_s < 0 && !chunk->token_ids.empty()) {
      outcome_.ttft_s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - outcome_.start).count();
    }
    if (chunk->finish_reason != FinishReason::kNone) {
      outcome_.finish_reason = chunk->finish_reason;
      outcome_.usage = chunk->usage;
    }
    if (channel_->overflowed() && !client_gone_) {
      slow_reader_ = true;
      abandon_locked();
    }
    return chunk;
  }

  grpc::Status end_status(const GenerationChunk& final_chunk) const {
    return client_gone_ ? gone_status()
                        : final_status(final_chunk.finish_reason, final_chunk.error_message);
  }

  // From OnDone: the call's line, its id released, its slot in flight freed.
  void done() {
    if (outcome_.request_id.empty()) {
      outcome_.request_id = proto_.request_id().substr(0, gateway_.options().max_request_id_bytes);
    }
    if (gateway_.options().log_prompts && proto_.prompt_case() == v1::GenerateRequest::kText) {
      outcome_.prompt_text = proto_.text();
    }
    outcome_.code = status_.error_code();
    outcome_.error_message = status_.error_message();
    gateway_.end_call(outcome_);
    release_id();
    if (entered_) gateway_.leave();
    self_.reset();
  }

  // Finish() is next: status_ is the call's end, and its id is free for a new call the moment
  // the client sees that end.
  void set_status(grpc::Status status) {
    status_ = std::move(status);
    release_id();
  }
  void release_id() {
    if (!reserved_) return;
    reserved_ = false;
    gateway_.registry().release(outcome_.request_id);
  }

  RequestGateway& gateway_;
  grpc::CallbackServerContext* ctx_;
  v1::GenerateRequest proto_;
  std::mutex mutex_;
  std::shared_ptr<ChunkChannel> channel_;
  bool client_gone_ = false;
  bool finished_ = false;  // Finish (or StartWriteAndFinish) was called

 private:
  void admit() {
    grpc::Status s = admit_and_submit();
    if (!s.ok()) {
      {
        std::lock_guard lock(mutex_);
        set_status(s);
      }
      refuse(s);
    }
  }

  grpc::Status admit_and_submit() {
    if (!parse_message(raw_, proto_)) return undecodable("GenerateRequest");
    raw_.Clear();
    if (!gateway_.enter()) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "the server is shutting down and admits no new requests");
    }
    entered_ = true;
    if (grpc::Status s = gateway_.check_request_id(proto_.request_id()); !s.ok()) return s;
    GenerationRequest request;
    if (grpc::Status s = to_request(request); !s.ok()) return s;
    if (grpc::Status s = gateway_.check(request); !s.ok()) return s;
    const std::string id =
        proto_.request_id().empty() ? gateway_.registry().next_id() : proto_.request_id();
    outcome_.request_id = id;
    request.request_id = id;
    if (!gateway_.registry().reserve(id)) {
      return grpc::Status(grpc::StatusCode::ALREADY_EXISTS,
                          fmt::format("request_id '{}' is already in flight", id));
    }
    reserved_ = true;
    std::weak_ptr<CallBase> weak = weak_from_this();
    RequestGateway* gateway = &gateway_;
    channel_ =
        std::make_shared<ChunkChannel>(gateway_.options().max_pending_bytes, [weak, gateway] {
          if (std::shared_ptr<CallBase> s = weak.lock()) gateway->post_delivery([s] { s->pump(); });
        });
    std::lock_guard lock(mutex_);
    if (client_gone_) return gone_status();
    uint64_t handle = 0;
    if (grpc::Status s = gateway_.submit(std::move(request), channel_, handle); !s.ok()) return s;
    handle_ = handle;
    if (gateway_.registry().attach(id, handle)) gateway_.engine().cancel(handle);
    return grpc::Status::OK;
  }

  grpc::Status to_request(GenerationRequest& out) const {
    switch (proto_.prompt_case()) {
      case v1::GenerateRequest::kText:
        if (proto_.text().empty()) {
          return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "prompt is empty");
        }
        if (grpc::Status s = gateway_.tokenize(proto_.text(), out.prompt_tokens); !s.ok()) return s;
        break;
      case v1::GenerateRequest::kTokenIds:
        out.prompt_tokens.assign(proto_.token_ids().ids().begin(), proto_.token_ids().ids().end());
        break;
      default:
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            "prompt is empty: set either text or token_ids");
    }
    out.params = to_sampling_params(proto_.sampling());
    return grpc::Status::OK;
  }

  grpc::ByteBuffer raw_;
  RequestOutcome outcome_;
  grpc::Status status_;
  std::optional<uint64_t> handle_;
  bool entered_ = false;
  bool reserved_ = false;
  bool deadline_passed_ = false;
  bool slow_reader_ = false;
  std::shared_ptr<CallBase> self_;

  friend class GenerateCall;
  friend class CompleteCall;
};

class GenerateCall final : public grpc::ServerWriteReactor<grpc::ByteBuffer>, public CallBase {
 public:
  GenerateCall(RequestGateway& gateway, grpc::CallbackServerContext* ctx,
               const grpc::ByteBuffer* request)
      : CallBase(gateway, ctx, request, "Generate") {}

  void OnCancel() override { client_cancelled(); }
  void OnWriteDone(bool ok) override {
    {
      std::lock_guard lock(mutex_);
      writing_ = false;
      if (!ok) abandon_locked();
    }
    pump();
  }
  void OnDone() override { done(); }

 private:
  void refuse(const grpc::Status& status) override {
    {
      std::lock_guard lock(mutex_);
      finished_ = true;
    }
    Finish(status);
  }

  void pump() override {
    for (;;) {
      std::unique_lock lock(mutex_);
      if (writing_ || finished_) return;
      std::optional<GenerationChunk> chunk = take_locked();
      if (!chunk) return;
      const bool final = chunk->finish_reason != FinishReason::kNone;
      if (client_gone_) {
        if (!final) continue;  // discarded: nobody reads it
        finished_ = true;
        set_status(end_status(*chunk));
        const grpc::Status status = gone_status();
        lock.unlock();
        Finish(status);
        return;
      }
      v1::GenerateResponse response;
      response.set_request_id(outcome_.request_id);
      append_chunk(*chunk, &response);
      buffer_.Clear();
      serialize_message(response, &buffer_);
      if (final) {
        finished_ = true;
        const grpc::Status status = end_status(*chunk);
        set_status(status);
        lock.unlock();
        StartWriteAndFinish(&buffer_, grpc::WriteOptions(), status);
        return;
      }
      writing_ = true;
      lock.unlock();
      StartWrite(&buffer_);
      return;
    }
  }

  grpc::ByteBuffer buffer_;
  bool writing_ = false;
};

class CompleteCall final : public grpc::ServerUnaryReactor, public CallBase {
 public:
  CompleteCall(RequestGateway& gateway, grpc::CallbackServerContext* ctx,
               const grpc::ByteBuffer* request, grpc::ByteBuffer* response)
      : CallBase(gateway, ctx, request, "Complete"), response_(response) {}

  void OnCancel() override { client_cancelled(); }
  void OnDone() override { done(); }

 private:
  void refuse(const grpc::Status& status) override {
    {
      std::lock_guard lock(mutex_);
      finished_ = true;
    }
    Finish(status);
  }

  void pump() override {
    std::unique_lock lock(mutex_);
    while (!finished_) {
      std::optional<GenerationChunk> chunk = take_locked();
      if (!chunk) return;
      if (!client_gone_) append_chunk(*chunk, &collected_);
      if (chunk->finish_reason == FinishReason::kNone) continue;
      finished_ = true;
      const grpc::Status status = end_status(*chunk);
      set_status(status);
      if (status.ok()) {
        collected_.set_request_id(outcome_.request_id);
        serialize_message(collected_, response_);
      }
      lock.unlock();
      Finish(status);
      return;
    }
  }

  grpc::ByteBuffer* response_;
  v1::CompleteResponse collected_;
};

}  // namespace

grpc::ServerWriteReactor<grpc::ByteBuffer>* start_generate_call(RequestGateway& gateway,
                                                                grpc::CallbackServerContext* ctx,
                                                                const grpc::ByteBuffer* request) {
  auto call = std::make_shared<GenerateCall>(gateway, ctx, request);
  GenerateCall* reactor = call.get();
  reactor->start(std::move(call));
  return reactor;
}

grpc::ServerUnaryReactor* start_complete_call(RequestGateway& gateway,
                                              grpc::CallbackServerContext* ctx,
                                              const grpc::ByteBuffer* request,
                                              grpc::ByteBuffer* response) {
  auto call = std::make_shared<CompleteCall>(gateway, ctx, request, response);
  CompleteCall* reactor = call.get();
  reactor->start(std::move(call));
  return reactor;
}

}  // namespace mlra
