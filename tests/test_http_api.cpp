// The OpenAI-compatible HTTP API end to end ([http]) on the fake runner: completions plain and
// streamed (SSE framing), token-id and list prompts, n, echo + logprobs with max_tokens 0 against
// the fake model's log-softmax, stop strings, chat with and without a template, models, health,
// OpenAI-shaped errors from the same validator as gRPC, and one log line + metrics per call.
#include <cmath>
#include <sstream>
#include <thread>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <catch2/catch.hpp>

#include "http_test_client.h"
#include "http_test_server.h"
#include "scrape_until.h"
#include "server/prometheus_text.h"

using namespace mlra;
using namespace mlra::testing;
using namespace std::chrono_literals;
using Json = nlohmann::json;
using boost::beast::http::verb;

namespace {

std::vector<int32_t> bytes_of(const std::string& s) {
  return {s.begin(), s.end()};
}

std::string fake_text(const std::vector<int32_t>& tokens) {
  std::string text;
  for (int32_t t : tokens) {
    if (t != FakeRunnerOptions{}.eot_token) text += fake_token_text(t);
  }
  return text;
}

// Raw log-softmax of the fake model after `history`, at `token`.
double fake_logprob(const std::vector<int32_t>& history, int32_t token) {
  const FakeRunnerOptions o;
  std::vector<float> row(size_t(o.vocab_size));
  fake_logits(history, o.vocab_size, o.text_vocab_size, row.data());
  double max = row[0], sum = 0;
  for (int64_t v = 0; v < o.text_vocab_size; ++v) max = std::max<double>(max, row[size_t(v)]);
  for (int64_t v = 0; v < o.text_vocab_size; ++v) sum += std::exp(row[size_t(v)] - max);
  return row[size_t(token)] - max - std::log(sum);
}

Json greedy(Json body) {
  body["temperature"] = 0;
  body["ignore_eos"] = true;
  return body;
}

http::ChatTemplate test_template() {
  http::ChatTemplate t;
  t.roles = {
      {"system", "S:{content}\n"}, {"user", "U:{content}\n"}, {"assistant", "A:{content}\n"}};
  t.generation_prompt = "A:";
  return t;
}

}  // namespace

TEST_CASE("http: /v1/completions answers the greedy continuation with usage", "[http][e2e]") {
  HttpServerUnderTest s(fake_runner());
  const HttpReply r =
      post_json(s.port(), "/v1/completions",
                greedy({{"model", "test-model"}, {"prompt", "hello"}, {"max_tokens", 6}}));
  REQUIRE(r.status == 200);
  CHECK_THAT(r.headers.at("content-type"), Catch::StartsWith("application/json"));
  const Json j = r.json();
  CHECK(j["object"] == "text_completion");
  CHECK(j["model"] == "test-model");
  CHECK(j["id"].get<std::string>().rfind("cmpl-", 0) == 0);
  REQUIRE(j["choices"].size() == 1);
  CHECK(j["choices"][0]["index"] == 0);
  CHECK(j["choices"][0]["text"] == fake_text(fake_greedy(bytes_of("hello"), 6)));
  CHECK(j["choices"][0]["finish_reason"] == "length");
  CHECK(j["choices"][0]["logprobs"].is_null());
  CHECK(j["usage"]["prompt_tokens"] == 5);
  CHECK(j["usage"]["completion_tokens"] == 6);
  CHECK(j["usage"]["total_tokens"] == 11);
  CHECK(j["usage"]["prompt_tokens_details"]["cached_tokens"] == 0);
}

TEST_CASE("http: prompt forms (ids, lists) and n choices in OpenAI's order", "[http][e2e]") {
  HttpServerUnderTest s(fake_runner());
  const std::vector<int32_t> a = {3, 4, 5}, b = {9, 8, 7, 6};
  const HttpReply r = post_json(s.port(), "/v1/completions",
                                greedy({{"prompt", {a, b}}, {"max_tokens", 4}, {"n", 2}}));
  REQUIRE(r.status == 200);
  const Json j = r.json();
  REQUIRE(j["choices"].size() == 4);
  for (int i = 0; i < 4; ++i) {
    CHECK(j["choices"][i]["index"] == i);
    CHECK(j["choices"][i]["text"] == fake_text(fake_greedy(i < 2 ? a : b, 4)));
  }
  CHECK(j["usage"]["prompt_tokens"] == 7);  // each prompt once
  CHECK(j["usage"]["completion_tokens"] == 16);
  const HttpReply ids =
      post_json(s.port(), "/v1/completions", greedy({{"prompt", a}, {"max_tokens", 3}}));
  CHECK(ids.json()["choices"][0]["text"] == fake_text(fake_greedy(a, 3)));
  const HttpReply texts =
      post_json(s.port(), "/v1/completions", greedy({{"prompt", {"ab", "cd"}}, {"max_tokens", 2}}));
  CHECK(texts.json()["choices"][1]["text"] == fake_text(fake_greedy(bytes_of("cd"), 2)));
  // Sampled with a seed: n choices differ from each other and repeat across calls.
  const Json sampled = {
      {"prompt", a}, {"max_tokens", 8}, {"n", 2}, {"seed", 5}, {"temperature", 1.0}};
  const Json x = post_json(s.port(), "/v1/completions", sampled).json();
  const Json y = post_json(s.port(), "/v1/completions", sampled).json();
  CHECK(x["choices"] == y["choices"]);
  CHECK(x["choices"][0]["text"] != x["choices"][1]["text"]);
}

TEST_CASE("http: echo + logprobs with max_tokens 0 scores the prompt (lm-eval loglikelihood)",
          "[http][e2e]") {
  HttpServerUnderTest s(fake_runner());
  const std::vector<int32_t> prompt = {11, 22, 33, 44, 55, 66, 77};
  const HttpReply r =
      post_json(s.port(), "/v1/completions",
                {{"prompt", prompt}, {"max_tokens", 0}, {"echo", true}, {"logprobs", 3}});
  REQUIRE(r.status == 200);
  const Json c = r.json()["choices"][0];
  CHECK(c["text"] == fake_text(prompt));
  CHECK(c["finish_reason"] == "length");
  const Json& lp = c["logprobs"];
  REQUIRE(lp["tokens"].size() == prompt.size());
  CHECK(lp["token_logprobs"][0].is_null());
  CHECK(lp["top_logprobs"][0].is_null());
  for (size_t i = 1; i < prompt.size(); ++i) {
    const std::vector<int32_t> history(prompt.begin(), prompt.begin() + long(i));
    CHECK(lp["token_logprobs"][i].get<double>() ==
          Approx(fake_logprob(history, prompt[i])).margin(1e-4));
    CHECK(lp["tokens"][i] == fake_token_text(prompt[i]));
    CHECK(lp["top_logprobs"][i].size() >= 3);
    CHECK(lp["text_offset"][i] == 2 * i);
  }
  CHECK(r.json()["usage"]["completion_tokens"] == 0);
  CHECK(r.json()["usage"]["prompt_tokens"] == 7);

  // With generation too: the prompt part as above, then the generated tokens' logprobs.
  const Json g =
      post_json(s.port(), "/v1/completions",
                greedy({{"prompt", prompt}, {"max_tokens", 3}, {"echo", true}, {"logprobs", 1}}))
          .json()["choices"][0];
  const std::vector<int32_t> out = fake_greedy(prompt, 3);
  CHECK(g["text"] == fake_text(prompt) + fake_text(out));
  REQUIRE(g["logprobs"]["tokens"].size() == prompt.size() + 3);
  std::vector<int32_t> history = prompt;
  for (size_t k = 0; k < 3; ++k) {
    CHECK(g["logprobs"]["token_logprobs"][prompt.size() + k].get<double>() ==
          Approx(fake_logprob(history, out[k])).margin(1e-4));
    history.push_back(out[k]);
  }
  CHECK(g["logprobs"]["token_logprobs"][3].get<double>() ==
        Approx(fake_logprob({11, 22, 33}, 44)).margin(1e-4));
  // Echo without logprobs and max_tokens 0: the prompt back, no engine work.
  const Json e =
      post_json(s.port(), "/v1/completions", {{"prompt", "xyz"}, {"max_tokens", 0}, {"echo", true}})
          .json();
  CHECK(e["choices"][0]["text"] == "xyz");
  CHECK(e["usage"]["prompt_tokens"] == 3);
}

TEST_CASE("http: streamed completions are SSE events ending in [DONE], same text as unary",
          "[http][e2e]") {
  HttpServerUnderTest s(fake_runner());
  const Json body = greedy({{"prompt", "stream me"}, {"max_tokens", 12}, {"n", 2}});
  const Json whole = post_json(s.port(), "/v1/completions", body).json();
  Json streamed_body = body;
  streamed_body["stream"] = true;
  streamed_body["stream_options"] = {{"include_usage", true}};
  const HttpReply r = post_json(s.port(), "/v1/completions", streamed_body);
  REQUIRE(r.status == 200);
  CHECK_THAT(r.headers.at("content-type"), Catch::StartsWith("text/event-stream"));
  CHECK(r.headers.at("transfer-encoding") == "chunked");
  const std::vector<std::string> events = sse_events(r.body);
  REQUIRE(events.size() >= 3);
  CHECK(events.back() == "[DONE]");
  std::string text[2];
  int finals[2] = {0, 0};
  for (size_t i = 0; i + 2 < events.size(); ++i) {
    const Json e = Json::parse(events[i]);
    CHECK(e["object"] == "text_completion");
    CHECK(e["usage"].is_null());
    REQUIRE(e["choices"].size() == 1);
    const int index = e["choices"][0]["index"];
    text[index] += e["choices"][0]["text"].get<std::string>();
    if (!e["choices"][0]["finish_reason"].is_null()) ++finals[index];
  }
  CHECK(finals[0] == 1);
  CHECK(finals[1] == 1);
  CHECK(text[0] == whole["choices"][0]["text"]);
  CHECK(text[1] == whole["choices"][1]["text"]);
  const Json usage = Json::parse(events[events.size() - 2]);
  CHECK(usage["choices"].empty());
  for (const char* key : {"prompt_tokens", "completion_tokens", "total_tokens"}) {
    CHECK(usage["usage"][key] == whole["usage"][key]);  // cached tokens differ: the prefix cache
  }
}

TEST_CASE("http: stop strings end a choice with finish_reason stop", "[http][e2e]") {
  HttpServerUnderTest s(fake_runner());
  const std::string full = fake_text(fake_greedy(bytes_of("abc"), 10));
  const std::string stop = full.substr(6, 3);
  const Json j = post_json(s.port(), "/v1/completions",
                           greedy({{"prompt", "abc"}, {"max_tokens", 10}, {"stop", stop}}))
                     .json();
  CHECK(j["choices"][0]["finish_reason"] == "stop");
  CHECK(j["choices"][0]["text"] == full.substr(0, full.find(stop)));
}

TEST_CASE("http: chat completions need a chat template and render it", "[http][e2e]") {
  const Json body = greedy(
      {{"messages",
        {{{"role", "system"}, {"content", "be brief"}}, {{"role", "user"}, {"content", "hi"}}}},
       {"max_tokens", 5}});
  {
    HttpServerUnderTest plain(fake_runner());
    const HttpReply r = post_json(plain.port(), "/v1/chat/completions", body);
    CHECK(r.status == 400);
    CHECK_THAT(r.json()["error"]["message"].get<std::string>(), Catch::Contains("chat template"));
  }
  HttpServerUnderTest s(fake_runner(), test_template());
  const HttpReply r = post_json(s.port(), "/v1/chat/completions", body);
  REQUIRE(r.status == 200);
  const Json j = r.json();
  CHECK(j["object"] == "chat.completion");
  CHECK(j["choices"][0]["message"]["role"] == "assistant");
  CHECK(j["choices"][0]["message"]["content"] ==
        fake_text(fake_greedy(bytes_of("S:be brief\nU:hi\nA:"), 5)));
  Json bad = body;
  bad["messages"][0]["role"] = "tool";
  CHECK(post_json(s.port(), "/v1/chat/completions", bad).status == 400);
  Json streamed = body;
  streamed["stream"] = true;
  const std::vector<std::string> events =
      sse_events(post_json(s.port(), "/v1/chat/completions", streamed).body);
  REQUIRE(events.back() == "[DONE]");
  const Json first = Json::parse(events.front());
  CHECK(first["object"] == "chat.completion.chunk");
  CHECK(first["choices"][0]["delta"]["role"] == "assistant");
  std::string content;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    content += Json::parse(events[i])["choices"][0]["delta"].value("content", "");
  }
  CHECK(content == j["choices"][0]["message"]["content"]);
}

TEST_CASE("http: models, health, routes and OpenAI-shaped errors", "[http][e2e]") {
  HttpServerUnderTest s(fake_runner());
  const Json models = http_call(s.port(), verb::get, "/v1/models").json();
  CHECK(models["object"] == "list");
  CHECK(models["data"][0]["id"] == "test-model");
  CHECK(http_call(s.port(), verb::get, "/health").status == 200);
  CHECK(http_call(s.port(), verb::get, "/nothing").status == 404);
  CHECK(http_call(s.port(), verb::get, "/v1/completions").status == 405);
  CHECK(http_call(s.port(), verb::delete_, "/v1/models").status == 405);

  struct Case {
    std::string body;
    unsigned status;
    std::string message_part;
  };
  const std::vector<Case> cases = {
      {"{not json", 400, "not valid JSON"},
      {"[1, 2]", 400, "JSON object"},
      {R"({"prompt": 5})", 400, "prompt"},
      {R"({"max_tokens": 3})", 400, "'prompt' is required"},
      {R"({"prompt": "a", "max_tokens": "many"})", 400, "max_tokens"},
      {R"({"prompt": "a", "max_tokens": -1})", 400, "max_tokens"},
      {R"({"prompt": "a", "max_tokens": 0})", 400, "max_tokens"},
      {R"({"prompt": "a", "temperature": -1})", 400, "temperature"},
      {R"({"prompt": "a", "top_p": 0})", 400, "top_p"},
      {R"({"prompt": "a", "logprobs": 21})", 400, "logprobs"},
      {R"({"prompt": [400]})", 400, "vocabulary"},
      {R"({"prompt": "a", "max_tokens": 1000})", 400, "context"},
      {R"({"prompt": "a", "n": 0})", 400, "'n'"},
      {R"({"prompt": "a", "stop": [""]})", 400, "stop string 0 is empty"},
      {R"({"prompt": "a", "model": "gpt-4"})", 404, "does not exist"},
      {R"({"prompt": "a", "suffix": "b"})", 400, "suffix"},
  };
  for (const Case& c : cases) {
    INFO(c.body);
    const HttpReply r = http_call(s.port(), verb::post, "/v1/completions", c.body);
    CHECK(r.status == c.status);
    const Json e = r.json();
    REQUIRE(e.contains("error"));
    CHECK(e["error"].contains("type"));
    CHECK(e["error"].contains("param"));
    CHECK(e["error"].contains("code"));
    CHECK_THAT(e["error"]["message"].get<std::string>(), Catch::Contains(c.message_part));
  }
  const HttpReply context =
      http_call(s.port(), verb::post, "/v1/completions", R"({"prompt": "a", "max_tokens": 1000})");
  CHECK(context.json()["error"]["code"] == "context_length_exceeded");
  // The same validator as gRPC: identical messages for identical values.
  v1::GenerateRequest g = token_request({1}, 4);
  g.mutable_sampling()->set_top_p(0);
  v1::CompleteResponse unused;
  const grpc::Status grpc_status = complete(*s.stub, g, unused);
  const HttpReply http_status = http_call(s.port(), verb::post, "/v1/completions",
                                          R"({"prompt": [1], "max_tokens": 4, "top_p": 0})");
  CHECK(http_status.json()["error"]["message"] == grpc_status.error_message());
  s.gateway->stop_admitting();
  CHECK(http_call(s.port(), verb::get, "/health").status == 503);
  CHECK(post_json(s.port(), "/v1/completions", {{"prompt", "a"}}).status == 503);
}

TEST_CASE("http: one request log line per call and metrics labelled by protocol",
          "[http][e2e][metrics]") {
  std::ostringstream captured;
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(std::make_shared<spdlog::logger>(
      "capture", std::make_shared<spdlog::sinks::ostream_sink_mt>(captured)));
  {
    HttpServerUnderTest s(fake_runner());
    REQUIRE(post_json(s.port(), "/v1/completions", greedy({{"prompt", "abc"}, {"max_tokens", 3}}))
                .status == 200);
    REQUIRE(post_json(s.port(), "/v1/completions", {{"prompt", "abc"}, {"top_p", 7}}).status ==
            400);
    v1::CompleteResponse unused;
    REQUIRE(complete(*s.stub, token_request({1, 2}, 2), unused).ok());
    const MetricsScrape scrape = scrape_until(
        [&] {
          const HttpReply m = http_call(s.port(), verb::get, "/metrics");
          REQUIRE(m.status == 200);
          return m.body;
        },
        [](const MetricsScrape& x) {
          return x.sum("mlra:requests_total", {{"protocol", "grpc"}, {"code", "OK"}}) == 1 &&
                 x.sum("mlra:requests_total", {{"protocol", "http"}, {"code", "OK"}}) == 1;
        });
    CHECK(scrape.sum("mlra:requests_total",
                     {{"protocol", "http"}, {"method", "completions"}, {"code", "OK"}}) == 1);
    CHECK(scrape.sum("mlra:requests_total", {{"protocol", "http"}, {"code", "INVALID_ARGUMENT"}}) ==
          1);
    CHECK(scrape.sum("mlra:requests_total", {{"protocol", "grpc"}, {"code", "OK"}}) == 1);
    CHECK(scrape.sum("mlra:request_success_total") == 2);
  }
  spdlog::set_default_logger(previous);
  const std::string log = captured.str();
  INFO(log);
  CHECK_THAT(log, Catch::Contains("request protocol=http method=completions id=cmpl-"));
  CHECK_THAT(log,
             Catch::Contains(
                 "status=OK http_status=200 finish=length prompt_tokens=3 completion_tokens=3"));
  CHECK_THAT(log, Catch::Contains("status=INVALID_ARGUMENT http_status=400 finish=none"));
  CHECK_THAT(log, Catch::Contains("request protocol=grpc method=Complete"));
}
