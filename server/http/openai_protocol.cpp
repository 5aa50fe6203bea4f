// OpenAI request parsing (one reader per field type, each naming the field it refuses) and the
// response JSON builders (header).
#include "server/http/openai_protocol.h"

#include <fmt/format.h>

#include "server/utf8.h"

namespace mlra::http {
namespace {

using Json = nlohmann::json;

[[noreturn]] void bad(const std::string& param, const std::string& message) {
  throw ApiError{400, message, "invalid_request_error", param, ""};
}

bool present(const Json& j, const char* key) {
  return j.contains(key) && !j[key].is_null();
}

template <typename T>
std::optional<T> number(const Json& j, const char* key) {
  if (!present(j, key)) return std::nullopt;
  const Json& v = j[key];
  if constexpr (std::is_integral_v<T>) {
    if (!v.is_number_integer()) bad(key, fmt::format("'{}' must be an integer", key));
    const auto x = v.get<int64_t>();
    if (x < std::numeric_limits<T>::min() || x > std::numeric_limits<T>::max()) {
      bad(key, fmt::format("'{}' is out of range", key));
    }
    return static_cast<T>(x);
  } else {
    if (!v.is_number()) bad(key, fmt::format("'{}' must be a number", key));
    return v.get<T>();
  }
}

std::optional<bool> boolean(const Json& j, const char* key) {
  if (!present(j, key)) return std::nullopt;
  if (!j[key].is_boolean()) bad(key, fmt::format("'{}' must be a boolean", key));
  return j[key].get<bool>();
}

std::vector<int32_t> token_list(const Json& v, const std::string& param) {
  std::vector<int32_t> ids;
  for (const Json& t : v) {
    if (!t.is_number_integer()) bad(param, fmt::format("'{}' must hold integer token ids", param));
    const auto x = t.get<int64_t>();
    if (x < INT32_MIN || x > INT32_MAX)
      bad(param, fmt::format("'{}': token id out of range", param));
    ids.push_back(static_cast<int32_t>(x));
  }
  return ids;
}

std::vector<Prompt> prompts(const Json& j) {
  if (!present(j, "prompt")) bad("prompt", "'prompt' is required");
  const Json& p = j["prompt"];
  const auto text = [](std::string s) { return Prompt{true, std::move(s), {}}; };
  if (p.is_string()) return {text(p.get<std::string>())};
  if (!p.is_array() || p.empty()) {
    bad("prompt", "'prompt' must be a string, a list of strings, or a list of token-id lists");
  }
  std::vector<Prompt> out;
  if (p[0].is_number_integer()) return {Prompt{false, "", token_list(p, "prompt")}};
  for (const Json& item : p) {
    if (item.is_string()) {
      out.push_back(text(item.get<std::string>()));
    } else if (item.is_array()) {
      out.push_back(Prompt{false, "", token_list(item, "prompt")});
    } else {
      bad("prompt", "'prompt' list items must be strings or token-id lists");
    }
  }
  return out;
}

std::vector<ChatMessage> messages(const Json& j) {
  if (!present(j, "messages") || !j["messages"].is_array() || j["messages"].empty()) {
    bad("messages", "'messages' must be a non-empty list");
  }
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < j["messages"].size(); ++i) {
    const Json& m = j["messages"][i];
    const std::string where = fmt::format("messages[{}]", i);
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      bad(where, where + " must be an object with a string 'role'");
    }
    ChatMessage msg{m["role"].get<std::string>(), ""};
    const Json content = m.value("content", Json());
    if (content.is_string()) {
      msg.content = content.get<std::string>();
    } else if (content.is_array()) {  // [{"type": "text", "text": "..."}]
      for (const Json& part : content) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
            !part["text"].is_string()) {
          bad(where, where + ": only text content parts are supported");
        }
        msg.content += part["text"].get<std::string>();
      }
    } else if (!content.is_null()) {
      bad(where, where + ": 'content' must be a string or a list of text parts");
    }
    out.push_back(std::move(msg));
  }
  return out;
}

void read_stop(const Json& j, SamplingParams& p) {
  if (!present(j, "stop")) return;
  const Json& s = j["stop"];
  if (s.is_string()) {
    p.stop.push_back(s.get<std::string>());
    return;
  }
  if (!s.is_array()) bad("stop", "'stop' must be a string or a list of strings");
  for (const Json& x : s) {
    if (!x.is_string()) bad("stop", "'stop' must be a string or a list of strings");
    p.stop.push_back(x.get<std::string>());
  }
}

void read_sampling(const Json& j, bool chat, SamplingParams& p) {
  std::optional<int32_t> max_tokens = number<int32_t>(j, "max_tokens");
  if (chat && !max_tokens) max_tokens = number<int32_t>(j, "max_completion_tokens");
  if (max_tokens) p.max_tokens = *max_tokens;
  if (auto v = number<float>(j, "temperature")) p.temperature = *v;
  if (auto v = number<float>(j, "top_p")) p.top_p = *v;
  if (auto v = number<int32_t>(j, "top_k")) p.top_k = *v;
  if (auto v = number<float>(j, "min_p")) p.min_p = *v;
  if (auto v = number<float>(j, "repetition_penalty")) p.repetition_penalty = *v;
  if (auto v = number<float>(j, "presence_penalty")) p.presence_penalty = *v;
  if (auto v = number<float>(j, "frequency_penalty")) p.frequency_penalty = *v;
  if (present(j, "seed")) {
    if (!j["seed"].is_number_integer()) bad("seed", "'seed' must be an integer");
    p.seed = j["seed"].is_number_unsigned() ? j["seed"].get<uint64_t>()
                                            : static_cast<uint64_t>(j["seed"].get<int64_t>());
  }
  if (auto v = boolean(j, "ignore_eos")) p.ignore_eos = *v;
  read_stop(j, p);
  if (present(j, "stop_token_ids")) {
    if (!j["stop_token_ids"].is_array()) bad("stop_token_ids", "'stop_token_ids' must be a list");
    p.stop_token_ids = token_list(j["stop_token_ids"], "stop_token_ids");
  }
}

}  // namespace

std::string dump(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string error_json(const ApiError& e) {
  Json error = {{"message", e.message},
                {"type", e.type},
                {"param", e.param.empty() ? Json() : Json(e.param)},
                {"code", e.code.empty() ? Json() : Json(e.code)}};
  return dump(Json{{"error", std::move(error)}});
}

unsigned http_status_of(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return 200;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::OUT_OF_RANGE:
      return 400;
    case grpc::StatusCode::UNAUTHENTICATED:
      return 401;
    case grpc::StatusCode::NOT_FOUND:
      return 404;
    case grpc::StatusCode::ALREADY_EXISTS:
      return 409;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return 429;
    case grpc::StatusCode::CANCELLED:
      return 499;  // the client closed the request (nginx's convention); nobody reads it
    case grpc::StatusCode::UNAVAILABLE:
      return 503;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return 504;
    default:
      return 500;
  }
}

ApiError api_error(const grpc::Status& s) {
  ApiError e;
  e.status = http_status_of(s.error_code());
  e.message = s.error_message();
  if (e.status == 429) e.type = "rate_limit_error";
  if (e.status >= 500) e.type = e.status == 503 ? "service_unavailable" : "server_error";
  if (s.error_code() == grpc::StatusCode::OUT_OF_RANGE) e.code = "context_length_exceeded";
  return e;
}

CompletionRequest parse_completion_request(std::string_view body, bool chat, int32_t max_n) {
  Json j = Json::parse(body, nullptr, false);
  if (j.is_discarded()) bad("", "the request body is not valid JSON");
  if (!j.is_object()) bad("", "the request body must be a JSON object");
  CompletionRequest r;
  r.chat = chat;
  if (present(j, "model")) {
    if (!j["model"].is_string()) bad("model", "'model' must be a string");
    r.model = j["model"].get<std::string>();
  }
  if (chat) {
    r.messages = messages(j);
  } else {
    r.prompts = prompts(j);
  }
  read_sampling(j, chat, r.params);
  if (auto n = number<int32_t>(j, "n")) r.n = *n;
  if (r.n < 1 || r.n > max_n) bad("n", fmt::format("'n' must be in [1, {}] (got {})", max_n, r.n));
  if (auto best_of = number<int32_t>(j, "best_of"); best_of && *best_of != r.n) {
    bad("best_of", "'best_of' other than n is not supported");
  }
  if (present(j, "logit_bias") && !(j["logit_bias"].is_object() && j["logit_bias"].empty())) {
    bad("logit_bias", "'logit_bias' is not supported");
  }
  if (present(j, "suffix")) bad("suffix", "'suffix' is not supported");
  if (present(j, "tools") || present(j, "response_format") || present(j, "guided_json")) {
    bad("", "tools and structured output are not supported");
  }
  if (chat) {
    if (boolean(j, "logprobs").value_or(false)) {
      r.logprobs = number<int32_t>(j, "top_logprobs").value_or(0);
    } else if (present(j, "top_logprobs")) {
      bad("top_logprobs", "'top_logprobs' needs 'logprobs': true");
    }
  } else {
    r.logprobs = number<int32_t>(j, "logprobs");
    r.echo = boolean(j, "echo").value_or(false);
  }
  r.stream = boolean(j, "stream").value_or(false);
  if (present(j, "stream_options")) {
    const Json& o = j["stream_options"];
    if (!o.is_object()) bad("stream_options", "'stream_options' must be an object");
    if (!r.stream) bad("stream_options", "'stream_options' needs 'stream': true");
    r.include_usage = boolean(o, "include_usage").value_or(false);
  }
  if (present(j, "user") && !j["user"].is_string()) bad("user", "'user' must be a string");
  return r;
}

Json finish_reason_json(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength:
      return "length";
    case FinishReason::kStop:
    case FinishReason::kEos:
      return "stop";
    default:
      return nullptr;
  }
}

namespace {

std::string token_text(const TextCodec& codec, int32_t id) {
  return valid_utf8(codec.decode({id}));
}

Json top_map(const TextCodec& codec, const TokenLogprobs& lp, int32_t top_n) {
  Json top = Json::object();
  for (size_t k = 0; k < lp.top.size() && int32_t(k) < top_n; ++k) {
    top[token_text(codec, lp.top[k].token)] = lp.top[k].logprob;
  }
  // OpenAI lists the chosen token among the alternatives too.
  if (top_n > 0) top[token_text(codec, lp.token)] = lp.logprob;
  return top;
}

}  // namespace

Json completion_logprobs(const TextCodec& codec, const std::vector<int32_t>& prompt,
                         const std::vector<TokenLogprobs>& prompt_logprobs,
                         const std::vector<TokenLogprobs>& generated, int32_t top_n,
                         size_t offset) {
  Json tokens = Json::array(), token_logprobs = Json::array(), top = Json::array(),
       offsets = Json::array();
  auto add = [&](int32_t id, const TokenLogprobs* lp) {
    const std::string text = token_text(codec, id);
    tokens.push_back(text);
    token_logprobs.push_back(lp ? Json(lp->logprob) : Json());
    top.push_back(lp ? top_map(codec, *lp, top_n) : Json());
    offsets.push_back(offset);
    offset += text.size();
  };
  for (size_t i = 0; i < prompt.size(); ++i) {
    const TokenLogprobs* lp =
        i > 0 && i - 1 < prompt_logprobs.size() ? &prompt_logprobs[i - 1] : nullptr;
    add(prompt[i], lp);
  }
  for (const TokenLogprobs& lp : generated) add(lp.token, &lp);
  return Json{{"tokens", tokens},
              {"token_logprobs", token_logprobs},
              {"top_logprobs", top},
              {"text_offset", offsets}};
}

Json chat_logprobs(const TextCodec& codec, const std::vector<TokenLogprobs>& generated,
                   int32_t top_n) {
  auto entry = [&](int32_t id, float logprob) {
    const std::string raw = codec.decode({id});
    Json bytes = Json::array();
    for (unsigned char c : raw) bytes.push_back(int(c));
    return Json{{"token", valid_utf8(raw)}, {"logprob", logprob}, {"bytes", bytes}};
  };
  Json content = Json::array();
  for (const TokenLogprobs& lp : generated) {
    Json e = entry(lp.token, lp.logprob);
    Json top = Json::array();
    for (size_t k = 0; k < lp.top.size() && int32_t(k) < top_n; ++k) {
      top.push_back(entry(lp.top[k].token, lp.top[k].logprob));
    }
    e["top_logprobs"] = top;
    content.push_back(std::move(e));
  }
  return Json{{"content", content}};
}

Json usage_json(const Usage& u) {
  return Json{{"prompt_tokens", u.prompt_tokens},
              {"completion_tokens", u.completion_tokens},
              {"total_tokens", u.prompt_tokens + u.completion_tokens},
              {"prompt_tokens_details", {{"cached_tokens", u.cached_prompt_tokens}}}};
}

}  // namespace mlra::http
