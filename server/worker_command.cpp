// Worker process main loop: Init -> (NcclId) -> load shard -> Ready -> Step* -> Shutdown.
// Rank 0 samples its logits itself and answers a Step with the token ids (Tokens); the other
// ranks answer with an Ack. Raw-logits steps (tools, tests) get the logits instead.
// Any failure is reported to the frontend as an Error message carrying the failing step number,
// then the worker exits: a rank that failed mid-step cannot rejoin its peers' collectives.
#include "server/worker_command.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <memory>

#include <spdlog/spdlog.h>

#include "engine/control_channel.h"
#include "kernels/backend.h"
#include "kernels/communicator.h"
#include "kernels/sampling.h"
#include "kernels/shm_communicator.h"
#include "models/cache_shape.h"
#include "models/checkpoint.h"
#include "models/local_runner.h"
#include "models/model_config.h"
#include "models/shard_plan.h"
#include "models/transformer.h"
#ifdef MLRA_HAVE_CUDA
#include "kernels/nccl_communicator.h"
#endif

namespace mlra {
namespace {

constexpr auto kForever = Clock::time_point::max();

std::unique_ptr<Backend> make_worker_backend(const WorkerInit& init) {
  if (init.backend == "cpu") return make_cpu_backend();
#ifdef MLRA_HAVE_CUDA
  if (init.backend == "cuda") return make_cuda_backend(init.device);
#endif
  throw std::runtime_error("backend '" + init.backend + "' is not available in this build");
}

std::unique_ptr<Communicator> make_worker_comm(const WorkerInit& init, int rank, int tp,
                                               Backend& backend, ControlChannel& channel) {
  if (tp == 1) return make_single_rank_communicator();
  if (init.backend == "cpu") return open_shm_communicator(init.shm_name, rank, tp);
#ifdef MLRA_HAVE_CUDA
  std::vector<char> id;
  if (rank == 0) {
    id = make_nccl_unique_id();
    channel.send(MessageType::kNcclId, 0, id);
  } else {
    id = channel.expect(kForever, 0, MessageType::kNcclId, MessageType::kNcclId).payload;
  }
  return make_nccl_communicator(id, rank, tp, init.device, backend);
#else
  (void)backend;
  (void)channel;
  throw std::runtime_error("no communicator for backend '" + init.backend + "'");
#endif
}

// Serves Step messages until Shutdown; returns the exit code.
int serve_steps(Transformer& model, Backend& backend, int rank, ControlChannel& channel,
                int64_t& current) {
  std::vector<float> logits;
  std::unique_ptr<TokenSampler> sampler;
  SampledTokens sampled;
  for (;;) {
    const Message m = channel.receive(kForever);
    current = m.step;
    if (m.type == MessageType::kShutdown) return 0;
    if (m.type != MessageType::kStep)
      throw ProtocolError(std::string("worker: unexpected ") + message_type_name(m.type));
    const StepMessage msg = decode_step_message(m.payload);
    if (msg.reply != StepReply::kAck && rank != 0)
      throw ProtocolError("worker: only rank 0 answers with logits or tokens");
    if (msg.reply == StepReply::kTokens) {
      // Sampled where the logits are (host or GPU): only ids and asked-for logprobs travel.
      if (!sampler) sampler = make_token_sampler(backend, model.config().text_vocab_size);
      sampled.clear();
      model.forward(msg.step, [&](const MatView& l) { sampler->sample(l, msg.sampling, sampled); });
      channel.send(MessageType::kTokens, m.step, encode(sampled));
      continue;
    }
    model.forward(msg.step, logits);
    if (msg.reply == StepReply::kLogits) {
      channel.send(MessageType::kLogits, m.step, logits.data(), logits.size() * sizeof(float));
    } else {
      channel.send(MessageType::kAck, m.step, nullptr, 0);
    }
  }
}

}  // namespace

int run_worker(int rank, int tp, int fd) {
  ::signal(SIGPIPE, SIG_IGN);
  ControlChannel channel(fd);
  int64_t current = 0;
  try {
    const Message first = channel.receive(kForever);
    if (first.type == MessageType::kShutdown) return 0;
    if (first.type != MessageType::kInit) throw ProtocolError("worker: expected Init");
    const WorkerInit init = decode_worker_init(first.payload);
    const ModelConfig config = load_runner_config(
        init.model_dir, init.variant, init.tpla ? LatentTpMode::kTpla : LatentTpMode::kReplicate,
        TplaOptions{init.tpla_transform, init.tpla_pd_separation, init.tpla_seed, init.tpla_slices},
        tp,
        LatentPrefillOptions{
            parse_latent_prefill(init.latent_prefill).value_or(LatentPrefill::kAuto),
            init.latent_prefill_scratch_bytes});
    const ShardPlan plan = make_shard_plan(config, tp, rank);
    auto backend = make_worker_backend(init);
    auto comm = make_worker_comm(init, rank, tp, *backend, channel);
    auto ckpt = Checkpoint::open(init.model_dir);
    const bool gpu_sized = init.gpu_memory_fraction > 0;
    const auto kv_cache = parse_kv_cache_dtype(init.kv_cache_dtype);
    if (!kv_cache) throw ProtocolError("worker: unknown kv_cache_dtype " + init.kv_cache_dtype);
    Transformer model(config, plan, *ckpt, *backend, *comm,
                      CacheOptions{init.page_size, gpu_sized ? 0 : init.num_pages, *kv_cache});
    int64_t num_pages = init.num_pages;
    if (gpu_sized) {
      num_pages = gpu_cache_pages(backend->memory(), init.gpu_memory_fraction, init.reserve_bytes,
                                  model.cache_bytes_per_token(), init.page_size);
    }
    if (init.cuda_graph_max_batch > 0 && backend->supports_capture())
      model.enable_decode_graphs(init.cuda_graph_max_batch);
    WorkerReady ready;
    ready.rank = rank;
    ready.pid = ::getpid();
    ready.weight_bytes = model.weight_bytes();
    ready.cache_bytes_per_token = model.cache_bytes_per_token();
    ready.cache_values_per_token_per_layer = plan.cache_width;
    ready.num_pages = num_pages;
    ready.backend = backend->name();
    channel.send(MessageType::kReady, 0, encode(ready));
    if (gpu_sized) {
      const Message m = channel.expect(kForever, 0, MessageType::kAllocate, MessageType::kAllocate);
      ByteReader r(m.payload);
      const int64_t pages = r.get<int64_t>();
      if (pages <= 0 || pages > num_pages)
        throw ProtocolError("worker: Allocate of " + std::to_string(pages) + " pages (" +
                            std::to_string(num_pages) + " fit)");
      model.allocate_cache(pages);
      channel.send(MessageType::kAck, 0, nullptr, 0);
    }
    return serve_steps(model, *backend, rank, channel, current);
  } catch (const ChannelClosed&) {
    return 3;  // the frontend is gone: nobody to report to
  } catch (const std::exception& e) {
    const std::string text = std::string("rank ") + std::to_string(rank) + ": " + e.what();
    spdlog::error("tp worker {}", text);
    try {
      channel.send(MessageType::kError, current, text.data(), text.size());
    } catch (const std::exception&) {
    }
    return 1;
  }
}

void register_worker_command(CLI::App& app, int& exit_code) {
  struct Args {
    int rank = 0, tp = 1, fd = -1;
  };
  auto args = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("worker", "internal: one tensor-parallel rank (spawned)");
  sub->group("");  // hidden from --help
  sub->add_option("--rank", args->rank, "rank")->required();
  sub->add_option("--tp", args->tp, "tensor-parallel degree")->required();
  sub->add_option("--fd", args->fd, "control socket file descriptor")->required();
  sub->callback([args, &exit_code] { exit_code = run_worker(args->rank, args->tp, args->fd); });
}

}  // namespace mlra
