// [auth] optional authentication: the API key check itself, then the real GrpcServer with a key
// (calls without it or with a wrong one end UNAUTHENTICATED before any handler runs; health
// stays open for probes), TLS from a self-signed certificate that openssl makes here, and a stock
// client (python3-grpcio through scripts/client.py) against both.
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include "grpc_test_server.h"
#include "server/auth.h"
#include "server/cli/grpc_probe.h"
#include "tests/checkpoint_test_util.h"

using namespace mlra;
using namespace mlra::testing;
using namespace std::chrono_literals;
using Catch::Matchers::Contains;

namespace {

constexpr const char* kKey = "k-7f3a9c2e";

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

CommandResult run_command(const std::string& command) {
  CommandResult r;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  REQUIRE(pipe != nullptr);
  char buffer[4096];
  for (size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) r.output.append(buffer, n);
  const int status = ::pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// A self-signed certificate for localhost / 127.0.0.1 and its key, made by openssl.
struct SelfSigned {
  mlra::test::ScratchDir dir{"tls"};
  std::string cert = (dir / "cert.pem").string(), key = (dir / "key.pem").string();
  SelfSigned() {
    const CommandResult r = run_command(
        "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -addext "
        "subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout " +
        key + " -out " + cert);
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
  }
};

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

grpc::Status stats(v1::Mlra::Stub& stub, const std::string& authorization,
                   v1::StatsResponse* out = nullptr) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 10s);
  if (!authorization.empty()) ctx.AddMetadata("authorization", authorization);
  v1::StatsResponse response;
  return stub.Stats(&ctx, v1::StatsRequest(), out ? out : &response);
}

std::string bearer(const std::string& key) {
  return "Bearer " + key;
}

}  // namespace

TEST_CASE("api_key_matches: the Bearer scheme and exactly the key", "[auth]") {
  const ApiKeyAuth auth(kKey);
  CHECK(auth.required());
  CHECK(auth.api_key_matches(bearer(kKey)));
  CHECK(auth.api_key_matches(std::string("bEaReR ") + kKey));
  for (const std::string& bad :
       {std::string(), std::string("Bearer"), std::string("Bearer "), std::string(kKey),
        std::string("Basic ") + kKey, bearer(kKey) + "x", bearer(std::string(kKey).substr(1)),
        bearer(" ") + kKey, bearer("K-7f3a9c2e")})
    CHECK_FALSE(auth.api_key_matches(bad));
  const ApiKeyAuth none("");
  CHECK_FALSE(none.required());
  CHECK(none.api_key_matches(""));
}

TEST_CASE("resolve_api_key: the config wins, else MLRA_API_KEY", "[auth]") {
  ::setenv("MLRA_API_KEY", "from-env", 1);
  CHECK(resolve_api_key("from-config") == "from-config");
  CHECK(resolve_api_key("") == "from-env");
  ::unsetenv("MLRA_API_KEY");
  CHECK(resolve_api_key("").empty());
}

TEST_CASE("gRPC with an API key: wrong or missing key is UNAUTHENTICATED, health stays open",
          "[auth][e2e]") {
  GrpcServerOptions options;
  options.auth.api_key = kKey;
  ServerUnderTest s(fake_runner(), {}, options);
  CHECK(stats(*s.stub, "").error_code() == grpc::StatusCode::UNAUTHENTICATED);
  CHECK(stats(*s.stub, bearer("wrong")).error_code() == grpc::StatusCode::UNAUTHENTICATED);
  CHECK(stats(*s.stub, std::string("Basic ") + kKey).error_code() ==
        grpc::StatusCode::UNAUTHENTICATED);
  CHECK(stats(*s.stub, bearer(kKey)).ok());

  // A refused Generate never reaches the engine.
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", bearer("wrong"));
    auto reader = s.stub->Generate(&ctx, token_request({1, 2, 3}, 8));
    v1::GenerateResponse chunk;
    CHECK_FALSE(reader->Read(&chunk));
    const grpc::Status status = reader->Finish();
    CHECK(status.error_code() == grpc::StatusCode::UNAUTHENTICATED);
    CHECK_THAT(status.error_message(), Contains("wrong API key"));
  }
  CHECK(s.engine->stats().requests_finished == 0);
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", bearer(kKey));
  auto reader = s.stub->Generate(&ctx, token_request({1, 2, 3}, 8));
  v1::GenerateResponse chunk;
  int tokens = 0;
  while (reader->Read(&chunk)) tokens += chunk.token_ids_size();
  CHECK(reader->Finish().ok());
  CHECK(tokens == 8);

  CHECK(check_health(s.channel, "", 5s).serving == ServingStatus::kServing);
  std::vector<std::string> services;
  CHECK(list_services(s.channel, 5s, services).error_code() == grpc::StatusCode::UNAUTHENTICATED);
}

TEST_CASE("gRPC over TLS from certificate and key files (self-signed, openssl)", "[auth][e2e]") {
  SelfSigned tls;
  auto engine = std::make_unique<Engine>(fake_runner(), fake_decoder_factory(), EngineOptions{});
  GrpcServerOptions options;
  options.address = "127.0.0.1:0";
  options.auth = {kKey, tls.cert, tls.key};
  GrpcServer server(*engine, byte_codec(), options);
  const std::string target = "localhost:" + std::to_string(server.port());

  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = read_file(tls.cert);
  auto secure = v1::Mlra::NewStub(grpc::CreateChannel(target, grpc::SslCredentials(ssl)));
  v1::StatsResponse response;
  CHECK(stats(*secure, bearer(kKey), &response).ok());
  CHECK(response.healthy());
  CHECK(stats(*secure, "").error_code() == grpc::StatusCode::UNAUTHENTICATED);
  // A plaintext client cannot talk to the TLS port; a client that does not trust the
  // certificate cannot either.
  auto plain = v1::Mlra::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  CHECK(stats(*plain, bearer(kKey)).error_code() == grpc::StatusCode::UNAVAILABLE);
  auto untrusting = v1::Mlra::NewStub(
      grpc::CreateChannel(target, grpc::SslCredentials(grpc::SslCredentialsOptions())));
  CHECK(stats(*untrusting, bearer(kKey)).error_code() == grpc::StatusCode::UNAVAILABLE);
  server.shutdown(0ms);

  GrpcServerOptions missing = options;
  missing.auth.tls_key_file = tls.dir.path().string() + "/absent.pem";
  CHECK_THROWS_WITH(GrpcServer(*engine, byte_codec(), missing),
                    Contains("absent.pem") && Contains("cannot read"));
  GrpcServerOptions not_pem = options;
  not_pem.auth.tls_cert_file = tls.key + ".txt";
  std::ofstream(not_pem.auth.tls_cert_file) << "not a certificate\n";
  CHECK_THROWS_WITH(GrpcServer(*engine, byte_codec(), not_pem), Contains("is not PEM"));
}

TEST_CASE("a stock client (python3-grpcio: scripts/client.py) with the key over TLS",
          "[auth][e2e]") {
  SelfSigned tls;
  GrpcServerOptions options;
  options.auth = {kKey, tls.cert, tls.key};
  auto engine = std::make_unique<Engine>(fake_runner(), fake_decoder_factory(), EngineOptions{});
  options.address = "127.0.0.1:0";
  GrpcServer server(*engine, byte_codec(), options);
  const std::string client =
      std::string("/usr/bin/python3 ") + MLRA_SOURCE_DIR +
      "/scripts/client.py --timeout-s 20 --addr localhost:" + std::to_string(server.port()) +
      " --tls-ca " + tls.cert;
  const CommandResult ok = run_command(client + " --api-key " + kKey + " --stats");
  INFO(ok.output);
  CHECK(ok.exit_code == 0);
  CHECK_THAT(ok.output, Contains("\"healthy\": true"));
  const CommandResult from_env = run_command("MLRA_API_KEY=" + std::string(kKey) + " " + client +
                                             " --token-ids 1,2,3 --max-tokens 4 --ignore-eos");
  INFO(from_env.output);
  CHECK(from_env.exit_code == 0);
  CHECK_THAT(from_env.output, Contains("completion_tokens=4"));
  const CommandResult wrong = run_command(client + " --api-key nope --stats");
  CHECK(wrong.exit_code == 1);
  CHECK_THAT(wrong.output, Contains("UNAUTHENTICATED"));
  const CommandResult health = run_command(client + " --health");
  CHECK(health.exit_code == 0);
  CHECK_THAT(health.output, Contains("SERVING"));
  server.shutdown(0ms);
}
