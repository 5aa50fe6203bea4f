// CompletionCall: admission on the gateway's admission pool, everything after on the
// connection's strand (pump: take each choice's merged output, write it; end: log the call).
#include "server/http/completion_call.h"

#include <algorithm>
#include <chrono>
#include <mutex>
#include <vector>

#include <fmt/format.h>

#include "server/http/openai_protocol.h"
#include "server/utf8.h"

namespace mlra::http {
namespace {

using Json = nlohmann::json;

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

class CompletionCall : public std::enable_shared_from_this<CompletionCall> {
 public:
  CompletionCall(const ApiContext& api, std::shared_ptr<Exchange> exchange, bool chat)
      : api_(api), gateway_(*api.gateway), exchange_(std::move(exchange)), chat_(chat) {
    outcome_.protocol = "http";
    outcome_.method = chat ? "chat.completions" : "completions";
    created_ = unix_now();
  }

  void start() {
    exchange_->on_gone([s = shared_from_this()] { s->client_gone(); });
    exchange_->on_drained([s = shared_from_this()] { s->pump(); });
    gateway_.post_admission([s = shared_from_this()] { s->admit(); });
  }

 private:
  struct Choice {
    int32_t index = 0;
    size_t prompt = 0;
    GenerationRequest request;
    std::shared_ptr<ChunkChannel> channel;
    std::optional<uint64_t> handle;  // under mutex_
    bool needs_engine = true;        // echo with max_tokens 0 and no logprobs does not
    bool done = false;
    bool started = false;  // stream: its first event was written
    ChoiceOutput out;
    std::string error;
  };

  // Admission pool.
  void admit() {
    std::optional<ApiError> error;
    try {
      prepare();
    } catch (const ApiError& e) {
      error = e;
    } catch (const std::exception& e) {
      error = ApiError{500, e.what(), "server_error", "", ""};
    }
    if (!error) error = submit_all();
    exchange_->post([s = shared_from_this(), error] { s->admitted(error); });
  }

  void prepare() {
    const CompletionRequest parsed =
        parse_completion_request(exchange_->request().body(), chat_, api_.max_n);
    request_ = parsed;
    if (!request_.model.empty() && request_.model != api_.model_name) {
      throw ApiError{404, fmt::format("The model '{}' does not exist.", request_.model),
                     "invalid_request_error", "model", "model_not_found"};
    }
    if (!gateway_.enter()) {
      throw ApiError{503, "the server is shutting down and admits no new requests",
                     "service_unavailable", "", ""};
    }
    entered_ = true;
    outcome_.request_id = (chat_ ? "chatcmpl-" : "cmpl-") + gateway_.registry().next_id();
    if (chat_) {
      if (!api_.chat_template) {
        throw ApiError{400,
                       "this model has no chat template (it is a base model): use "
                       "/v1/completions, or start the server with the config key chat_template",
                       "invalid_request_error", "messages", ""};
      }
      try {
        request_.prompts = {Prompt{true, render_chat(*api_.chat_template, request_.messages), {}}};
      } catch (const std::invalid_argument& e) {
        throw ApiError{400, e.what(), "invalid_request_error", "messages", ""};
      }
      for (const std::string& s : api_.chat_template->stop) request_.params.stop.push_back(s);
    }
    const size_t total = request_.prompts.size() * size_t(request_.n);
    if (total > size_t(api_.max_choices)) {
      throw ApiError{400,
                     fmt::format("prompts x n = {} choices (at most {})", total, api_.max_choices),
                     "invalid_request_error", "n", ""};
    }
    if (request_.params.max_tokens == 0 && !request_.echo) {
      throw ApiError{400, "max_tokens must be >= 1 (0 only with echo)", "invalid_request_error",
                     "max_tokens", ""};
    }
    if (gateway_.options().log_prompts && !request_.prompts.empty() &&
        request_.prompts[0].is_text) {
      outcome_.prompt_text = request_.prompts[0].text;
    }
    build_choices();
  }

  void build_choices() {
    SamplingParams params = request_.params;
    if (request_.logprobs) {
      // Engine logprobs n > 0 = chosen + n best; OpenAI's 0 = the chosen token's only.
      params.logprobs = *request_.logprobs == 0 ? 1 : *request_.logprobs;
      if (request_.echo) params.prompt_logprobs = std::max(*request_.logprobs, 0);
    }
    for (size_t p = 0; p < request_.prompts.size(); ++p) {
      const Prompt& prompt = request_.prompts[p];
      std::vector<int32_t> ids = prompt.tokens;
      if (prompt.is_text) {
        if (prompt.text.empty())
          throw ApiError{400, "prompt is empty", "invalid_request_error", "prompt", ""};
        if (grpc::Status s = gateway_.tokenize(prompt.text, ids); !s.ok()) throw api_error(s);
      }
      for (int32_t j = 0; j < request_.n; ++j) {
        Choice c;
        c.index = int32_t(choices_.size());
        c.prompt = p;
        c.request.request_id = fmt::format("{}-{}", outcome_.request_id, c.index);
        c.request.prompt_tokens = ids;
        c.request.params = params;
        // n > 1 with a seed: distinct but reproducible samples.
        if (params.seed && j > 0) c.request.params.seed = *params.seed + uint64_t(j);
        // Echo of a prompt with nothing to generate or score is answered without the engine.
        c.needs_engine = !(params.max_tokens == 0 && request_.echo && params.prompt_logprobs < 0);
        if (grpc::Status s = c.needs_engine ? gateway_.check(c.request) : grpc::Status::OK;
            !s.ok()) {
          throw api_error(s);
        }
        if (c.needs_engine && c.request.prompt_tokens.empty()) {
          throw ApiError{400, "prompt is empty", "invalid_request_error", "prompt", ""};
        }
        c.out.prompt_tokens = ids;
        choices_.push_back(std::move(c));
      }
    }
  }

  std::optional<ApiError> submit_all() {
    std::weak_ptr<CompletionCall> weak = weak_from_this();
    std::shared_ptr<Exchange> exchange = exchange_;
    for (Choice& c : choices_) {
      if (!c.needs_engine) {
        c.done = true;
        c.out.finish = FinishReason::kLength;
        c.out.usage.prompt_tokens = int32_t(c.out.prompt_tokens.size());
        continue;
      }
      c.channel =
          std::make_shared<ChunkChannel>(gateway_.options().max_pending_bytes, [weak, exchange] {
            exchange->post([weak] {
              if (auto s = weak.lock()) s->pump();
            });
          });
      std::lock_guard lock(mutex_);
      if (gone_) break;
      uint64_t handle = 0;
      if (grpc::Status s = gateway_.submit(c.request, c.channel, handle); !s.ok()) {
        // Those already queued are cancelled; the call ends with this error after their end.
        for (Choice& other : choices_) {
          if (other.handle) gateway_.engine().cancel(*other.handle);
        }
        return api_error(s);
      }
      c.handle = handle;
    }
    std::lock_guard lock(mutex_);
    if (gone_) {
      for (Choice& c : choices_) {
        if (c.handle) gateway_.engine().cancel(*c.handle);
      }
    }
    return std::nullopt;
  }

  // Strand from here on.
  void admitted(std::optional<ApiError> error) {
    admitted_ = true;
    for (Choice& c : choices_) {
      std::lock_guard lock(mutex_);
      if (c.needs_engine && !c.handle) c.done = true;  // never queued
    }
    if (error) {
      failure_ = error;
    } else if (request_.stream && !exchange_->client_gone()) {
      exchange_->start_stream(200, "text/event-stream");
      streaming_ = true;
    }
    pump();
  }

  void client_gone() {
    {
      std::lock_guard lock(mutex_);
      if (gone_) return;
      gone_ = true;
      for (Choice& c : choices_) {
        if (c.handle) gateway_.engine().cancel(*c.handle);
      }
    }
    // A pump that saw a write in flight left output in the channels (which then do not wake
    // us again): drain them now that nothing is written any more.
    exchange_->post([s = shared_from_this()] { s->pump(); });
  }

  void pump() {
    if (!admitted_ || ended_) return;
    // on_drained (or client_gone) pumps again; meanwhile the channels merge.
    if (streaming_ && exchange_->writing() && !exchange_->client_gone()) return;
    std::string events;
    for (Choice& c : choices_) {
      // Until take() comes back empty: only then does the channel wake us for the next output.
      while (!c.done && c.channel) {
        std::optional<GenerationChunk> chunk = c.channel->take();
        if (!chunk) break;
        if (c.channel->overflowed() && !slow_reader_) {
          slow_reader_ = true;
          client_gone();
        }
        take_chunk(c, *chunk, events);
      }
    }
    const bool all_done =
        std::all_of(choices_.begin(), choices_.end(), [](const Choice& c) { return c.done; });
    if (gone_ || exchange_->client_gone()) {
      if (all_done) end();
      return;
    }
    if (!streaming_) {
      if (all_done) respond_whole();
      return;
    }
    if (all_done) {
      for (Choice& c : choices_) {
        if (!c.started) events += sse(choice_event(c, c.out.text, c.out.logprobs, true));
      }
      if (std::optional<ApiError> e = end_error()) events += sse(Json::parse(error_json(*e)));
      if (request_.include_usage) {
        events += sse(envelope(Json::array(), usage_json(total_usage())));
      }
      events += "data: [DONE]\n\n";
    }
    if (!events.empty()) exchange_->send(std::move(events));
    if (all_done) {
      exchange_->finish_stream();
      end();
    }
  }

  void take_chunk(Choice& c, GenerationChunk& chunk, std::string& events) {
    if (outcome_.ttft_s < 0 && !chunk.token_ids.empty()) {
      outcome_.ttft_s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - outcome_.start).count();
    }
    const size_t text_before = c.out.text.size();
    const size_t logprobs_before = c.out.logprobs.size();
    c.out.tokens.insert(c.out.tokens.end(), chunk.token_ids.begin(), chunk.token_ids.end());
    c.out.text += valid_utf8(chunk.text);
    c.out.logprobs.insert(c.out.logprobs.end(), chunk.logprobs.begin(), chunk.logprobs.end());
    c.out.prompt_logprobs.insert(c.out.prompt_logprobs.end(), chunk.prompt_logprobs.begin(),
                                 chunk.prompt_logprobs.end());
    if (chunk.finish_reason != FinishReason::kNone) {
      c.done = true;
      c.out.finish = chunk.finish_reason;
      c.out.usage = chunk.usage;
      c.error = chunk.error_message;
    }
    if (!streaming_ || gone_) return;
    const std::vector<TokenLogprobs> new_logprobs(c.out.logprobs.begin() + long(logprobs_before),
                                                  c.out.logprobs.end());
    const std::string delta = c.out.text.substr(text_before);
    if (delta.empty() && new_logprobs.empty() && !c.done && c.started) return;
    events += sse(choice_event(c, delta, new_logprobs, c.done));
  }

  // One choice's object: a stream event (streaming_) or the whole choice.
  Json choice_event(Choice& c, const std::string& text, const std::vector<TokenLogprobs>& lps,
                    bool final) {
    const bool first = !c.started;
    c.started = true;
    const Json finish = final ? finish_reason_json(c.out.finish) : Json();
    const int32_t top_n = request_.logprobs.value_or(0);
    if (chat_) {
      Json delta = Json::object();
      if (first) delta["role"] = "assistant";
      if (!text.empty() || first) delta["content"] = text;
      Json choice = {{"index", c.index}, {"delta", delta}, {"finish_reason", finish}};
      choice["logprobs"] = request_.logprobs ? chat_logprobs(gateway_.codec(), lps, top_n) : Json();
      return envelope(Json::array({choice}), Json());
    }
    std::string out_text = text;
    std::vector<int32_t> prompt_part;
    if (first && request_.echo) {
      out_text = echo_text(c) + text;
      prompt_part = c.out.prompt_tokens;
    }
    Json choice = {{"index", c.index}, {"text", out_text}, {"finish_reason", finish}};
    const size_t offset = first ? 0 : echo_length(c) + c.out.text.size() - text.size();
    choice["logprobs"] = request_.logprobs
                             ? completion_logprobs(gateway_.codec(), prompt_part,
                                                   c.out.prompt_logprobs, lps, top_n, offset)
                             : Json();
    return envelope(Json::array({choice}), Json());
  }

  std::string echo_text(const Choice& c) const {
    const Prompt& p = request_.prompts[c.prompt];
    return p.is_text ? p.text : valid_utf8(gateway_.codec().decode(p.tokens));
  }
  size_t echo_length(const Choice& c) const { return request_.echo ? echo_text(c).size() : 0; }

  Json envelope(Json choices, Json usage) const {
    Json j = {{"id", outcome_.request_id},
              {"object", chat_ ? (streaming_ ? "chat.completion.chunk" : "chat.completion")
                               : "text_completion"},
              {"created", created_},
              {"model", api_.model_name},
              {"choices", std::move(choices)}};
    if (!usage.is_null() || (streaming_ && request_.include_usage)) j["usage"] = std::move(usage);
    return j;
  }

  static std::string sse(const Json& j) { return "data: " + dump(j) + "\n\n"; }

  Usage total_usage() const {
    Usage u;
    for (const Choice& c : choices_) {
      if (c.index % request_.n == 0) {  // each prompt once, however many choices it has
        u.prompt_tokens += c.out.usage.prompt_tokens;
        u.cached_prompt_tokens += c.out.usage.cached_prompt_tokens;
      }
      u.completion_tokens += c.out.usage.completion_tokens;
    }
    return u;
  }

  // The error a call whose every request ended still reports (refusal, engine failure, abort).
  std::optional<ApiError> end_error() const {
    if (failure_) return failure_;
    for (const Choice& c : choices_) {
      const grpc::Status s = final_status(c.out.finish, c.error);
      if (!s.ok()) return api_error(s);
    }
    return std::nullopt;
  }

  void respond_whole() {
    if (std::optional<ApiError> e = end_error()) {
      http_status_ = e->status;
      exchange_->respond(e->status, "application/json", error_json(*e));
      return end();
    }
    Json choices = Json::array();
    for (Choice& c : choices_) {
      Json choice = choice_event(c, c.out.text, c.out.logprobs, true)["choices"][0];
      if (chat_) {
        choice.erase("delta");
        choice["message"] = {{"role", "assistant"}, {"content", c.out.text}};
      }
      choices.push_back(std::move(choice));
    }
    exchange_->respond(200, "application/json",
                       dump(envelope(std::move(choices), usage_json(total_usage()))));
    end();
  }

  void end() {
    if (ended_) return;
    ended_ = true;
    outcome_.usage = total_usage();
    for (const Choice& c : choices_) {
      if (c.out.finish != FinishReason::kNone) outcome_.finish_reason = c.out.finish;
    }
    grpc::Status status = grpc::Status::OK;
    if (failure_) {
      status = grpc::Status(grpc_code(failure_->status), failure_->message);
    } else if (gone_ || exchange_->client_gone()) {
      status = slow_reader_ ? grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                           "the client read too slowly: request cancelled")
                            : grpc::Status(grpc::StatusCode::CANCELLED, "client disconnected");
    } else if (std::optional<ApiError> e = end_error()) {
      status = grpc::Status(grpc_code(e->status), e->message);
    }
    outcome_.code = status.error_code();
    outcome_.error_message = status.error_message();
    outcome_.http_status =
        http_status_ ? http_status_ : (streaming_ ? 200 : http_status_of(outcome_.code));
    gateway_.end_call(outcome_);
    if (entered_) gateway_.leave();
    exchange_->on_drained(nullptr);
    exchange_->on_gone(nullptr);
  }

  static grpc::StatusCode grpc_code(unsigned http_status) {
    switch (http_status) {
      case 404:
        return grpc::StatusCode::NOT_FOUND;
      case 429:
        return grpc::StatusCode::RESOURCE_EXHAUSTED;
      case 503:
        return grpc::StatusCode::UNAVAILABLE;
      case 500:
        return grpc::StatusCode::INTERNAL;
      default:
        return grpc::StatusCode::INVALID_ARGUMENT;
    }
  }

  const ApiContext& api_;
  RequestGateway& gateway_;
  std::shared_ptr<Exchange> exchange_;
  const bool chat_;
  int64_t created_ = 0;
  CompletionRequest request_;
  RequestOutcome outcome_;
  std::vector<Choice> choices_;
  bool entered_ = false;
  std::mutex mutex_;  // handles and gone_: admission thread vs strand
  bool gone_ = false;
  // Strand only.
  bool admitted_ = false;
  bool streaming_ = false;
  bool ended_ = false;
  bool slow_reader_ = false;
  unsigned http_status_ = 0;
  std::optional<ApiError> failure_;
};

}  // namespace

void serve_completion(const ApiContext& api, std::shared_ptr<Exchange> exchange, bool chat) {
  std::make_shared<CompletionCall>(api, std::move(exchange), chat)->start();
}

}  // namespace mlra::http
