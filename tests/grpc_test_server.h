// An in-process mlra-serve for end-to-end tests: an Engine over a given ModelRunner, the real
// GrpcServer on 127.0.0.1 port 0, and a stub on a real loopback channel. Also the helpers the
// [e2e] tests share: a byte codec, stream/unary callers, and the fake runner's greedy reference.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include "engine/engine.h"
#include "engine/local_runner.h"
#include "fake_model_runner.h"
#include "proto/mlra.grpc.pb.h"
#include "server/grpc_server.h"

namespace mlra::testing {

// Prompt bytes -> ids (one per byte); ids -> the fake decoder's two-letter strings.
inline TextCodec byte_codec() {
  TextCodec codec;
  codec.encode = [](std::string_view text) {
    return std::vector<int32_t>(text.begin(), text.end());
  };
  codec.decode = [](const std::vector<int32_t>& ids) {
    std::string out;
    for (int32_t t : ids) out += fake_token_text(t);
    return out;
  };
  return codec;
}

struct ServerUnderTest {
  explicit ServerUnderTest(std::unique_ptr<ModelRunner> runner, EngineOptions engine_options = {},
                           GrpcServerOptions server_options = {}, TextCodec codec = byte_codec()) {
    engine = std::make_unique<Engine>(std::move(runner), fake_decoder_factory(), engine_options);
    server_options.address = "127.0.0.1:0";
    server = std::make_unique<GrpcServer>(*engine, std::move(codec), server_options);
    channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(server->port()),
                                  grpc::InsecureChannelCredentials());
    stub = v1::Mlra::NewStub(channel);
  }
  ~ServerUnderTest() { server->shutdown(std::chrono::milliseconds(0)); }

  std::unique_ptr<Engine> engine;
  std::unique_ptr<GrpcServer> server;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Mlra::Stub> stub;
};

inline std::unique_ptr<ModelRunner> fake_runner(int64_t num_pages = 256,
                                                std::chrono::milliseconds delay = {}) {
  FakeRunnerOptions o;
  o.num_pages = num_pages;
  o.delay = delay;
  return std::make_unique<FakeModelRunner>(o);
}

inline std::filesystem::path tiny_mlra4_dir() {
  return std::filesystem::path(MLRA_TEST_DATA) / "tiny" / "mlra4";
}

// The real CPU runner on the tiny MLRA-4 checkpoint (2 layers, vocab 512, context 256).
inline std::unique_ptr<ModelRunner> tiny_mlra4_runner() {
  RunnerConfig o;
  o.model_dir = tiny_mlra4_dir();
  o.variant = "mlra4";
  o.backend = "cpu";
  o.page_size = 16;
  o.num_pages = 256;
  return make_local_runner(o);
}

struct StreamResult {
  std::vector<v1::GenerateResponse> chunks;
  grpc::Status status;
  std::vector<int32_t> tokens;  // all chunks' token ids, in order
  std::string text;             // all chunks' text, in order
};

inline StreamResult generate(v1::Mlra::Stub& stub, const v1::GenerateRequest& request) {
  StreamResult result;
  grpc::ClientContext ctx;
  auto reader = stub.Generate(&ctx, request);
  v1::GenerateResponse chunk;
  while (reader->Read(&chunk)) {
    result.tokens.insert(result.tokens.end(), chunk.token_ids().begin(), chunk.token_ids().end());
    result.text += chunk.text();
    result.chunks.push_back(chunk);
  }
  result.status = reader->Finish();
  return result;
}

inline grpc::Status complete(v1::Mlra::Stub& stub, const v1::GenerateRequest& request,
                             v1::CompleteResponse& response) {
  grpc::ClientContext ctx;
  return stub.Complete(&ctx, request, &response);
}

inline v1::GenerateRequest token_request(const std::vector<int32_t>& prompt, int32_t max_tokens) {
  v1::GenerateRequest r;
  for (int32_t t : prompt) r.mutable_token_ids()->add_ids(t);
  r.mutable_sampling()->set_max_tokens(max_tokens);
  r.mutable_sampling()->set_temperature(0.0f);
  r.mutable_sampling()->set_ignore_eos(true);
  return r;
}

// Greedy continuation under FakeModelRunner, computed straight from fake_logits.
inline std::vector<int32_t> fake_greedy(std::vector<int32_t> history, int32_t n) {
  const FakeRunnerOptions o;
  std::vector<float> row(static_cast<size_t>(o.vocab_size));
  std::vector<int32_t> out;
  for (int32_t i = 0; i < n; ++i) {
    fake_logits(history, o.vocab_size, o.text_vocab_size, row.data());
    int32_t best = 0;
    for (int32_t v = 1; v < o.text_vocab_size; ++v) {
      if (row[v] > row[best]) best = v;
    }
    out.push_back(best);
    history.push_back(best);
  }
  return out;
}

}  // namespace mlra::testing
