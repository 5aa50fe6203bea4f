// Worker process main loop: Init (the RunnerConfig) -> (NcclId) -> Rank setup (engine/rank.h)
// -> Ready -> (Allocate) -> Step* -> Shutdown.
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
#include "engine/rank.h"
#include "kernels/backend.h"
#include "kernels/communicator.h"
#include "kernels/host_staged_communicator.h"
#include "kernels/sampling.h"
#include "kernels/shm_communicator.h"
#include "models/checkpoint.h"
#include "models/model_config.h"
#include "models/model_loader.h"
#include "models/transformer.h"
#ifdef MLRA_HAVE_CUDA
#include "kernels/nccl_communicator.h"
#endif

namespace mlra {
namespace {

constexpr auto kForever = Clock::time_point::max();

std::unique_ptr<HostStaging> make_worker_staging(Backend& backend) {
  if (backend.kind() == DeviceKind::kCpu) return make_host_memory_staging();
#ifdef MLRA_HAVE_CUDA
  return make_cuda_host_staging(backend);
#else
  throw std::runtime_error("no host staging for backend " + backend.name());
#endif
}

// The rank's all-reduce, of the kind rank_communicator() picks: shared memory between CPU
// workers, host-staged between workers that share a device, NCCL between GPU workers on distinct
// devices (rank 0 makes the unique id, the frontend relays it).
std::unique_ptr<Communicator> make_worker_comm(const WorkerInit& init, CommunicatorKind kind,
                                               int rank, Backend& backend,
                                               ControlChannel& channel) {
  const int tp = init.config.tp;
  switch (kind) {
    case CommunicatorKind::kSingleRank:
      return make_single_rank_communicator();
    case CommunicatorKind::kSharedMemory:
      return open_shm_communicator(init.shm_name, rank, tp);
    case CommunicatorKind::kHostStaged:
      return make_host_staged_communicator(open_shm_communicator(init.shm_name, rank, tp),
                                           make_worker_staging(backend));
    case CommunicatorKind::kNccl:
      break;
  }
#ifdef MLRA_HAVE_CUDA
  std::vector<char> id;
  if (rank == 0) {
    id = make_nccl_unique_id();
    channel.send(MessageType::kNcclId, 0, id);
  } else {
    id = channel.expect(kForever, 0, MessageType::kNcclId, MessageType::kNcclId).payload;
  }
  return make_nccl_communicator(id, rank, tp, rank_device(init.config, rank), backend);
#else
  (void)channel;
  throw std::runtime_error("no communicator for backend '" + init.config.backend + "'");
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

int run_worker(int rank, int fd) {
  ::signal(SIGPIPE, SIG_IGN);
  ControlChannel channel(fd);
  int64_t current = 0;
  try {
    const Message first = channel.receive(kForever);
    if (first.type == MessageType::kShutdown) return 0;
    if (first.type != MessageType::kInit) throw ProtocolError("worker: expected Init");
    const WorkerInit init = decode_worker_init(first.payload);
    const ModelConfig config = runner_model_config(init.config);
    const CommunicatorKind kind = rank_communicator(init.config);
    const CheckedCheckpoint checked =
        open_checked_checkpoint(init.config.model_dir, config, rank, init.config.tp);
    Rank self(init.config, config, *checked.checkpoint, rank,
              [&](Backend& b) { return make_worker_comm(init, kind, rank, b, channel); });
    checked.checksums->wait();  // this rank's share of the zip CRCs, verified beside the upload
    RankInfo ready = self.info();
    ready.communicator = communicator_kind_name(kind);
    channel.send(MessageType::kReady, 0, encode(ready));
    if (init.config.gpu_memory_fraction > 0) {
      const Message m = channel.expect(kForever, 0, MessageType::kAllocate, MessageType::kAllocate);
      ByteReader r(m.payload);
      self.allocate_cache(r.get<int64_t>());
      channel.send(MessageType::kAck, 0, nullptr, 0);
    }
    return serve_steps(self.model(), self.backend(), rank, channel, current);
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
    int rank = 0, fd = -1;
  };
  auto args = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("worker", "internal: one tensor-parallel rank (spawned)");
  sub->group("");  // hidden from --help
  sub->add_option("--rank", args->rank, "rank")->required();
  sub->add_option("--fd", args->fd, "control socket file descriptor")->required();
  sub->callback([args, &exit_code] { exit_code = run_worker(args->rank, args->fd); });
}

}  // namespace mlra
