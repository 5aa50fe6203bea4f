// client: one channel, one call per invocation. Text goes to stdout unbuffered as it streams;
// everything else (finish reason, usage, errors) goes to stderr, so stdout is just the answer.
#include "server/cli/client_command.h"

#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include "proto/mlra.grpc.pb.h"
#include "server/cli/grpc_probe.h"
#include "server/cli/sampling_flags.h"

namespace mlra {
namespace {

struct ClientArgs {
  std::string addr = "localhost:50051";
  std::optional<std::string> prompt;
  std::vector<int32_t> token_ids;
  std::string request_id;
  SamplingFlags sampling;
  bool stream = false, info = false, health = false, stats = false, list_services = false;
  bool show_ids = false;
  double timeout_s = 600;
};

void set_deadline(grpc::ClientContext& ctx, double seconds) {
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
}

int rpc_failed(const char* what, const grpc::Status& status) {
  fmt::print(stderr, "mlra-serve client: {} failed: {} ({})\n", what, status.error_message(),
             static_cast<int>(status.error_code()));
  return 1;
}

int print_json(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string json;
  if (!google::protobuf::util::MessageToJsonString(message, &json, options).ok()) return 1;
  fmt::print("{}", json);
  return 0;
}

void print_summary(const std::string& id, v1::FinishReason reason, const v1::Usage& usage,
                   const std::vector<int32_t>& ids, bool show_ids) {
  fmt::print(stderr,
             "\n[request_id={} finish_reason={} prompt_tokens={} completion_tokens={} "
             "cached_prompt_tokens={}]\n",
             id, v1::FinishReason_Name(reason), usage.prompt_tokens(), usage.completion_tokens(),
             usage.cached_prompt_tokens());
  if (show_ids) fmt::print(stderr, "[token_ids={}]\n", fmt::join(ids, ","));
}

int run_generation(v1::Mlra::Stub& stub, const ClientArgs& a) {
  v1::GenerateRequest request;
  request.set_request_id(a.request_id);
  if (a.prompt) {
    request.set_text(*a.prompt);
  } else {
    for (int32_t t : a.token_ids) request.mutable_token_ids()->add_ids(t);
  }
  *request.mutable_sampling() = to_proto(a.sampling);
  grpc::ClientContext ctx;
  set_deadline(ctx, a.timeout_s);
  std::vector<int32_t> ids;
  if (!a.stream) {
    v1::CompleteResponse response;
    grpc::Status status = stub.Complete(&ctx, request, &response);
    if (!status.ok()) return rpc_failed("Complete", status);
    ids.assign(response.token_ids().begin(), response.token_ids().end());
    fmt::print("{}", response.text());
    std::fflush(stdout);
    print_summary(response.request_id(), response.finish_reason(), response.usage(), ids,
                  a.show_ids);
    return 0;
  }
  auto reader = stub.Generate(&ctx, request);
  v1::GenerateResponse chunk, last;
  while (reader->Read(&chunk)) {
    ids.insert(ids.end(), chunk.token_ids().begin(), chunk.token_ids().end());
    fmt::print("{}", chunk.text());
    std::fflush(stdout);
    last = chunk;
  }
  grpc::Status status = reader->Finish();
  if (!status.ok()) return rpc_failed("Generate", status);
  print_summary(last.request_id(), last.finish_reason(), last.usage(), ids, a.show_ids);
  return 0;
}

int run_client(const ClientArgs& a) {
  auto channel = grpc::CreateChannel(a.addr, grpc::InsecureChannelCredentials());
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(a.timeout_s * 1000));
  if (a.health) {
    HealthResult h = check_health(channel, "", timeout);
    if (!h.status.ok()) return rpc_failed("Health/Check", h.status);
    fmt::print("{}\n", serving_status_name(h.serving));
    return h.serving == ServingStatus::kServing ? 0 : 1;
  }
  if (a.list_services) {
    std::vector<std::string> names;
    grpc::Status status = list_services(channel, timeout, names);
    if (!status.ok()) return rpc_failed("reflection", status);
    for (const auto& n : names) fmt::print("{}\n", n);
    return 0;
  }
  auto stub = v1::Mlra::NewStub(channel);
  if (a.info || a.stats) {
    grpc::ClientContext ctx;
    set_deadline(ctx, a.timeout_s);
    grpc::Status status;
    if (a.info) {
      v1::ModelInfoResponse info;
      status = stub->ModelInfo(&ctx, v1::ModelInfoRequest{}, &info);
      if (status.ok()) return print_json(info);
    } else {
      v1::StatsResponse stats;
      status = stub->Stats(&ctx, v1::StatsRequest{}, &stats);
      if (status.ok()) return print_json(stats);
    }
    return rpc_failed(a.info ? "ModelInfo" : "Stats", status);
  }
  return run_generation(*stub, a);
}

}  // namespace

void register_client_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<ClientArgs>();
  CLI::App* cmd = app.add_subcommand("client", "talk to a running mlra-serve over gRPC");
  cmd->add_option("--addr,-a", args->addr, "server address host:port")->capture_default_str();
  auto* prompt = cmd->add_option("--prompt", args->prompt, "prompt text");
  auto* ids =
      cmd->add_option("--token-ids", args->token_ids, "prompt as token ids")->delimiter(',');
  prompt->excludes(ids);
  cmd->add_option("--request-id", args->request_id, "client request id (echoed back)");
  add_sampling_flags(*cmd, args->sampling);
  cmd->add_flag("--stream,-s", args->stream, "stream the answer as it is generated");
  cmd->add_flag("--show-ids", args->show_ids, "also print the generated token ids (stderr)");
  auto* health = cmd->add_flag("--health", args->health, "grpc.health.v1 check; exit 0 if SERVING");
  auto* info = cmd->add_flag("--info", args->info, "print ModelInfo as JSON");
  auto* stats = cmd->add_flag("--stats", args->stats, "print engine Stats as JSON");
  auto* list = cmd->add_flag("--list-services", args->list_services, "list services (reflection)");
  for (CLI::Option* a : {health, info, stats, list}) {
    for (CLI::Option* b : {health, info, stats, list, prompt, ids}) {
      if (a != b) a->excludes(b);
    }
  }
  cmd->add_option("--timeout-s", args->timeout_s, "deadline of each call")
      ->check(CLI::PositiveNumber);
  cmd->callback([args, &exit_code] {
    const ClientArgs& a = *args;
    if (!a.health && !a.info && !a.stats && !a.list_services && !a.prompt && a.token_ids.empty()) {
      throw CLI::ValidationError("client",
                                 "give --prompt or --token-ids (or --health, --info, "
                                 "--stats, --list-services)");
    }
    exit_code = run_client(a);
  });
}

}  // namespace mlra
