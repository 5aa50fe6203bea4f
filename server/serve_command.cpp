// serve: signals reach the main thread through a self-pipe (the handler only write()s), so the
// shutdown sequence runs as ordinary code. After the first signal the default disposition is
// restored: a second Ctrl-C ends the process at once. An engine failure (runner error, lost
// worker) comes through the same pipe and ends the process with kExitEngineFailed, so a
// supervisor (Docker, Kubernetes) restarts it. Before the model loads, the listening ports are
// reserved and the config is checked against the model and the machine, so those mistakes fail
// at once.
#include "server/serve_command.h"

#include <csignal>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <malloc.h>

#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include "server/grpc_server.h"
#include "server/http/http_server.h"
#include "server/http/openai_api.h"
#include "server/metrics_endpoint.h"
#include "server/port_reservation.h"
#include "server/prometheus_metrics.h"
#include "server/serving_stack.h"
#include "server/startup_checks.h"

namespace mlra {
namespace {

struct ServeArgs {
  std::string config;
  std::optional<std::string> model_dir, tokenizer_dir, attention, backend, host, dtype, mla_tp_mode,
      log_level;
  std::optional<int32_t> port, tp, metrics_port, http_port;
  bool log_prompts = false;
  std::vector<std::string> overrides;
  double grace_s = 30;
};

int g_signal_pipe[2] = {-1, -1};
constexpr char kEngineFailed = 0;  // written to the pipe instead of a signal number
constexpr int kExitEngineFailed = 3;

void on_signal(int signal_number) {
  const char c = static_cast<char>(signal_number);
  [[maybe_unused]] ssize_t n = write(g_signal_pipe[1], &c, 1);
}

void install_signal_handlers() {
  if (pipe(g_signal_pipe) != 0) throw std::runtime_error("pipe() failed");
  struct sigaction action = {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

int wait_for_signal() {
  char c = 0;
  while (read(g_signal_pipe[0], &c, 1) < 0 && errno == EINTR) {
  }
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  return c;
}

ServerConfig resolve_config(const ServeArgs& a) {
  ServerConfig config = load_config_or_default(a.config);
  auto set = [&](const char* key, const std::string& json_value) {
    apply_config_override(config, fmt::format("{}={}", key, json_value));
  };
  if (a.model_dir) set("model_dir", *a.model_dir);
  if (a.tokenizer_dir) set("tokenizer_dir", *a.tokenizer_dir);
  if (a.attention) set("variant", *a.attention);
  if (a.backend) set("backend", *a.backend);
  if (a.dtype) set("dtype", *a.dtype);
  if (a.mla_tp_mode) set("mla_tp_mode", *a.mla_tp_mode);
  if (a.host) set("host", *a.host);
  if (a.port) set("port", std::to_string(*a.port));
  if (a.tp) set("tp", std::to_string(*a.tp));
  if (a.metrics_port) set("metrics_port", std::to_string(*a.metrics_port));
  if (a.http_port) set("http_port", std::to_string(*a.http_port));
  if (a.log_level) set("log_level", *a.log_level);
  if (a.log_prompts) set("log_prompts", "true");
  for (const auto& o : a.overrides) apply_config_override(config, o);
  validate_server_config(config);
  if (!std::filesystem::is_directory(config.runner.model_dir)) {
    throw ConfigError(
        fmt::format("model_dir '{}' is not a folder", config.runner.model_dir.string()));
  }
  check_config_against_model(config);
  return config;
}

// Thousands of idle streams are thousands of sockets: lift the soft descriptor limit to the hard.
void raise_descriptor_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

// The HTTP listener (OpenAI API, /health, /metrics) over the shared gateway.
std::unique_ptr<http::Server> start_http(const ServerConfig& config,
                                         std::shared_ptr<RequestGateway> gateway,
                                         std::shared_ptr<PrometheusMetrics> metrics,
                                         const std::string& api_key) {
  auto api = std::make_shared<http::ApiContext>();
  api->gateway = gateway;
  api->model_name = config.runner.model_dir.filename().string();
  if (!config.chat_template.empty()) {
    api->chat_template = http::load_chat_template(config.chat_template);
  }
  http::ApiRoutes routes;
  routes.api = api;
  if (!api_key.empty()) {
    routes.authorize = [auth = std::make_shared<ApiKeyAuth>(api_key)](std::string_view header) {
      return auth->api_key_matches(header);
    };
  }
  Engine& engine = gateway->engine();
  routes.metrics = [metrics, &engine] {
    return scrape_metrics(*metrics->registry(),
                          [&] { metrics->refresh(engine.stats(), engine.healthy()); });
  };
  http::ServerOptions options;
  options.host = config.host;
  options.port = config.http_port;
  auto server = std::make_unique<http::Server>(options, http::make_api_handler(std::move(routes)));
  spdlog::info(
      "serving the OpenAI-compatible HTTP API on http://{}:{}/v1 (model '{}', chat template: {}{})",
      config.host, server->port(), api->model_name,
      config.chat_template.empty() ? "none" : config.chat_template,
      api_key.empty() ? "" : ", API key required");
  return server;
}

int run_serve(const ServeArgs& args) {
  ServerConfig config;
  try {
    config = resolve_config(args);
  } catch (const std::exception& e) {
    fmt::print(stderr, "mlra-serve serve: {}\n", e.what());
    return 2;
  }
  spdlog::set_level(spdlog::level::from_str(config.log_level));
  // Blocks of 1 MiB and more (request messages, their parsed token arrays) are mmapped and go
  // back to the OS when freed: glibc's adaptive threshold would otherwise rise after the first
  // large free and keep a flood's buffers in the heap for good.
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  install_signal_handlers();
  raise_descriptor_limit();
  try {
    PortReservation grpc_port(config.host, config.port, "gRPC");
    std::optional<PortReservation> metrics_port;
    if (config.metrics_port > 0) metrics_port.emplace(config.host, config.metrics_port, "metrics");
    std::optional<PortReservation> http_port;
    if (config.http_port > 0) http_port.emplace(config.host, config.http_port, "HTTP");
    std::shared_ptr<PrometheusMetrics> metrics;
    if (config.metrics_port > 0 || config.http_port > 0) {
      metrics = std::make_shared<PrometheusMetrics>(config.runner.model_dir.filename().string());
    }
    ServingStack stack = build_serving_stack(config, metrics);
    GrpcServerOptions options;
    options.address = fmt::format("{}:{}", config.host, grpc_port.port());
    options.max_threads = config.max_rpc_threads;
    options.memory_quota_bytes = config.grpc_memory_bytes;
    options.auth = {resolve_api_key(config.api_key), config.tls_cert_file, config.tls_key_file};
    options.on_engine_failure = [](const std::string&) {
      [[maybe_unused]] ssize_t n = write(g_signal_pipe[1], &kEngineFailed, 1);
    };
    options.service.labels = stack.labels;
    options.service.log_prompts = config.log_prompts;
    // Declared after the stack: stops serving scrapes before the engine it reads goes away.
    std::unique_ptr<MetricsEndpoint> endpoint;
    if (metrics) {
      metrics->describe(metrics_model_info(*stack.engine, stack.labels.dtype));
      Engine& engine = *stack.engine;
      if (config.metrics_port > 0) {
        metrics_port->release();
        endpoint = std::make_unique<MetricsEndpoint>(
            MetricsEndpointOptions{.host = config.host, .port = config.metrics_port},
            metrics->registry(),
            [metrics, &engine] { metrics->refresh(engine.stats(), engine.healthy()); });
        spdlog::info("metrics on http://{}:{}/metrics", config.host, endpoint->port());
      }
      options.service.on_call_end = [metrics](const RequestOutcome& o) {
        metrics->count_call(o.protocol, o.method, status_code_name(o.code));
      };
    }
    // One gateway for both frontends: one admission path, one in-flight count to drain.
    auto gateway = std::make_shared<RequestGateway>(
        *stack.engine, gpt2_text_codec(*stack.tokenizer), options.service);
    grpc_port.release();
    GrpcServer server(*stack.engine, gateway, options);
    std::unique_ptr<http::Server> http_server;
    if (http_port) {
      http_port->release();
      http_server = start_http(config, gateway, metrics, options.auth.api_key);
    }
    spdlog::info("serving mlra.v1.Mlra on {}:{} ({}{}, max context {}, {} cache tokens)",
                 config.host, server.port(), options.auth.tls() ? "TLS" : "plaintext",
                 options.auth.api_key.empty() ? "" : ", API key required",
                 stack.engine->options().max_context,
                 stack.engine->options().num_pages * stack.engine->options().page_size);
    const int signal_number = wait_for_signal();
    if (signal_number == kEngineFailed) {
      spdlog::error("exiting with status {} after the engine failure, for a supervisor to restart",
                    kExitEngineFailed);
      server.shutdown(std::chrono::milliseconds(0));
      return kExitEngineFailed;
    }
    spdlog::info("signal {}: stopping admissions, draining for up to {} s", signal_number,
                 args.grace_s);
    server.shutdown(std::chrono::milliseconds(static_cast<int64_t>(args.grace_s * 1000)));
    if (http_server) http_server->stop();
    stack.engine->shutdown(false);
    spdlog::info("stopped cleanly");
  } catch (const std::bad_alloc&) {
    spdlog::error(
        "out of memory while loading the model or allocating its cache "
        "(cache_memory_bytes {}, num_pages {}, tp {})",
        config.runner.cache_memory_bytes, config.runner.num_pages, config.runner.tp);
    return 1;
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
  return 0;
}

}  // namespace

void register_serve_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<ServeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "serve",
      "serve gRPC (mlra.v1.Mlra, health, reflection) and, with --http-port, the OpenAI HTTP API");
  cmd->add_option("--config,-c", args->config, "JSON config (default: configs/default.json)");
  cmd->add_option("--model-dir", args->model_dir, "override model_dir");
  cmd->add_option("--tokenizer-dir", args->tokenizer_dir,
                  "override tokenizer_dir (default: the model folder's own, else GPT-2)");
  cmd->add_option("--attention,--variant", args->attention, "override the attention variant");
  cmd->add_option("--backend", args->backend, "override backend: cpu | cuda");
  cmd->add_option("--dtype", args->dtype, "auto | fp32 (cpu) | bf16 (cuda)");
  cmd->add_option("--mla-tp-mode", args->mla_tp_mode, "override: replicate | tpla");
  cmd->add_option("--host", args->host, "override the listening host");
  cmd->add_option("--port,-p", args->port, "override the port (0: pick a free one)");
  cmd->add_option("--tp", args->tp, "override the tensor-parallel degree");
  cmd->add_option("--metrics-port", args->metrics_port,
                  "override metrics_port: Prometheus /metrics over HTTP (0: off)");
  cmd->add_option("--http-port", args->http_port,
                  "override http_port: OpenAI-compatible HTTP API, /health, /metrics (0: off)");
  cmd->add_option("--log-level", args->log_level,
                  "override log_level: trace | debug | info | warn | error | critical | off");
  cmd->add_flag("--log-prompts", args->log_prompts,
                "request log lines carry the prompt text (off: never logged)");
  cmd->add_option("--set,-o", args->overrides, "any config key: --set key=value (repeatable)");
  cmd->add_option("--grace-s", args->grace_s, "on SIGTERM, drain in-flight requests this long")
      ->check(CLI::NonNegativeNumber);
  cmd->callback([args, &exit_code] {
    spdlog::set_default_logger(spdlog::stderr_color_mt("mlra-serve"));
    exit_code = run_serve(*args);
  });
}

}  // namespace mlra
