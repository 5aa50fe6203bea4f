// ProcessRunner: spawn, load, lockstep execute and teardown of the TP worker processes.
// Every wait on workers polls all their sockets at once, so a worker that dies while another one
// blocks (in a barrier or an NCCL collective) is seen at once through EOF, not after a timeout.
// Workers get PR_SET_PDEATHSIG=SIGKILL: the thread that constructs the runner must outlive it.
#include "engine/process_runner.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <thread>

#include <spdlog/spdlog.h>

#include "kernels/shm_communicator.h"
#include "models/cache_shape.h"
#include "models/local_runner.h"
#include "models/shard_plan.h"

extern char** environ;

namespace mlra {
namespace {

Clock::time_point deadline_in(double seconds) {
  return Clock::now() +
         std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

std::string status_text(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    return "killed by signal " + std::to_string(sig) + " (" + strsignal(sig) + ")";
  }
  return "stopped";
}

}  // namespace

ProcessRunner::ProcessRunner(const RunnerOptions& o) : options_(o) {
  config_ =
      load_runner_config(o.model_dir, o.variant, o.mla_tp_mode, o.tpla, o.tp, o.latent_prefill);
  if (o.backend != "cpu" && o.backend != "cuda")
    throw RunnerError("unknown backend '" + o.backend + "'");
  // Page ids are shared by all ranks, so the page count fits the widest rank's budget (f32
  // values on CPU workers, bf16 on GPU workers). A GPU-sized cache is settled after loading.
  const bool gpu_sized = o.gpu_memory_fraction > 0;
  if (gpu_sized && o.backend != "cuda")
    throw RunnerError("gpu_memory_fraction needs the cuda backend (backend '" + o.backend + "')");
  const int64_t value_bytes = o.backend == "cuda" ? 2 : 4;
  const int64_t widest_bytes =
      cache_row_bytes_per_rank(config_, o.tp, o.kv_cache, value_bytes).max_values;
  int64_t num_pages = gpu_sized ? 0 : o.num_pages;
  if (!gpu_sized && num_pages == 0)
    num_pages = pages_for_budget(o.cache_memory_bytes, widest_bytes * config_.n_layer, o.page_size);
  if (!gpu_sized && num_pages <= 0) throw RunnerError("cache memory budget holds no page");

  for (char** e = environ; *e; ++e) env_storage_.emplace_back(*e);
  if (!std::getenv("NCCL_NVLS_ENABLE")) env_storage_.emplace_back("NCCL_NVLS_ENABLE=0");
  for (auto& s : env_storage_) envp_.push_back(s.data());
  envp_.push_back(nullptr);

  if (o.backend == "cpu") shm_ = std::make_unique<ShmSegment>(o.tp);
  workers_.reserve(size_t(o.tp));
  try {
    for (int r = 0; r < o.tp; ++r) spawn(r);
  } catch (const std::exception& e) {
    healthy_ = false;
    kill_all();
    throw RunnerError(std::string("cannot start workers: ") + e.what());
  }
  load(o, num_pages);
  if (gpu_sized) num_pages = allocate_gpu_sized_cache(o);
  if (shm_) shm_->unlink();

  info_.backend = o.backend;
  info_.tp = o.tp;
  info_.page_size = o.page_size;
  info_.num_pages = num_pages;
  for (const WorkerReady& r : ready_) {
    info_.cache_values_per_token_per_layer =
        std::max(info_.cache_values_per_token_per_layer, r.cache_values_per_token_per_layer);
    info_.cache_bytes_per_token = std::max(info_.cache_bytes_per_token, r.cache_bytes_per_token);
    info_.weight_bytes_per_rank = std::max(info_.weight_bytes_per_rank, r.weight_bytes);
  }
  info_.max_context =
      o.max_context ? o.max_context : (config_.block_size ? config_.block_size : 2048);
  for (const WorkerReady& r : ready_)
    spdlog::info(
        "tp rank {} (pid {}, {}): weights {:.1f} MB, cache {} values/token/layer = {} "
        "bytes/token, {} pages x {}",
        r.rank, r.pid, r.backend, r.weight_bytes / 1e6, r.cache_values_per_token_per_layer,
        r.cache_bytes_per_token, r.num_pages, o.page_size);
}

void ProcessRunner::spawn(int rank) {
  auto [parent_fd, child_fd] = make_socket_pair();
  const std::string binary =
      options_.worker_binary.empty() ? "/proc/self/exe" : options_.worker_binary.string();
  std::vector<std::string> args = {binary,   "worker",
                                   "--rank", std::to_string(rank),
                                   "--tp",   std::to_string(options_.tp),
                                   "--fd",   std::to_string(child_fd)};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(parent_fd);
    ::close(child_fd);
    throw RunnerError(std::string("fork: ") + std::strerror(errno));
  }
  if (pid == 0) {
    // Child: only async-signal-safe calls until exec.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(126);
    ::fcntl(child_fd, F_SETFD, 0);  // keep only our end across exec
    ::execve(argv[0], argv.data(), envp_.data());
    ::_exit(127);
  }
  ::close(child_fd);
  Worker w;
  w.rank = rank;
  w.pid = pid;
  w.channel = ControlChannel(parent_fd);
  workers_.push_back(std::move(w));
  pids_.push_back(pid);
}

void ProcessRunner::load(const RunnerOptions& o, int64_t num_pages) {
  const auto deadline = deadline_in(o.load_timeout_s);
  for (Worker& w : workers_) {
    WorkerInit init;
    init.model_dir = std::filesystem::absolute(o.model_dir).string();
    init.variant = o.variant;
    init.backend = o.backend;
    init.device = o.first_device + w.rank;
    init.page_size = o.page_size;
    init.num_pages = num_pages;
    init.kv_cache_dtype = kv_cache_dtype_name(o.kv_cache);
    init.shm_name = shm_ ? shm_->name() : "";
    init.tpla = o.mla_tp_mode == LatentTpMode::kTpla;
    init.tpla_transform = o.tpla.transform;
    init.tpla_pd_separation = o.tpla.pd_separation;
    init.tpla_seed = o.tpla.seed;
    init.tpla_slices = o.tpla.slices;
    init.latent_prefill = latent_prefill_name(o.latent_prefill.mode);
    init.latent_prefill_scratch_bytes = o.latent_prefill.scratch_bytes;
    init.gpu_memory_fraction = o.gpu_memory_fraction;
    init.reserve_bytes = activation_reserve_bytes(config_, o.cuda_graph_max_batch);
    init.cuda_graph_max_batch = o.backend == "cuda" ? o.cuda_graph_max_batch : 0;
    guarded(w, "Init", [&] { w.channel.send(MessageType::kInit, 0, encode(init), deadline); });
  }
  if (o.backend == "cuda" && o.tp > 1) {
    Message id;
    Worker& w0 = workers_[0];
    guarded(w0, "NcclId", [&] {
      id = w0.channel.expect(deadline, 0, MessageType::kNcclId, MessageType::kNcclId);
    });
    for (size_t r = 1; r < workers_.size(); ++r)
      guarded(workers_[r], "NcclId",
              [&] { workers_[r].channel.send(MessageType::kNcclId, 0, id.payload, deadline); });
  }
  ready_.resize(workers_.size());
  wait_all(0, deadline, "loading", [&](Worker& w) {
    const Message m = w.channel.expect(deadline, 0, MessageType::kReady, MessageType::kReady);
    ready_[size_t(w.rank)] = decode_worker_ready(m.payload);
  });
}

int64_t ProcessRunner::allocate_gpu_sized_cache(const RunnerOptions& o) {
  int64_t pages = std::numeric_limits<int64_t>::max();
  for (const WorkerReady& r : ready_) pages = std::min(pages, r.num_pages);
  if (pages <= 0) {
    kill_all();
    throw RunnerError("gpu_memory_fraction " + std::to_string(o.gpu_memory_fraction) +
                      " leaves no room for the cache after the weights");
  }
  const auto deadline = deadline_in(o.load_timeout_s);
  ByteWriter w;
  w.put(pages);
  for (Worker& worker : workers_)
    guarded(worker, "Allocate",
            [&] { worker.channel.send(MessageType::kAllocate, 0, w.bytes(), deadline); });
  wait_all(0, deadline, "Allocate", [&](Worker& worker) {
    worker.channel.expect(deadline, 0, MessageType::kAck, MessageType::kAck);
  });
  for (WorkerReady& r : ready_) r.num_pages = pages;
  return pages;
}

void ProcessRunner::execute(const StepBatch& step, const SamplingBatch& sampling,
                            SampledTokens& out) {
  if (sampling.size() != int64_t(step.logit_rows.size()))
    throw RunnerError("sampling rows (" + std::to_string(sampling.size()) +
                      ") differ from logit rows (" + std::to_string(step.logit_rows.size()) + ")");
  run_step(
      step, StepReply::kTokens, &sampling,
      [&](ControlChannel& ch, const MessageHeader& h, Clock::time_point deadline) {
        if (h.type != MessageType::kTokens)
          throw ProtocolError(std::string("expected Tokens, got ") + message_type_name(h.type));
        std::vector<char> payload(h.payload_size);
        ch.read_payload(payload.data(), payload.size(), deadline);
        out = decode_sampled_tokens(payload);
        if (out.size() != sampling.size())
          throw ProtocolError("Tokens: " + std::to_string(out.size()) + " rows, expected " +
                              std::to_string(sampling.size()));
      });
}

void ProcessRunner::execute(const StepBatch& step, std::vector<float>& logits) {
  const size_t want = step.logit_rows.size() * size_t(config_.vocab_size);
  run_step(
      step, StepReply::kLogits, nullptr,
      [&](ControlChannel& ch, const MessageHeader& h, Clock::time_point deadline) {
        if (h.type != MessageType::kLogits)
          throw ProtocolError(std::string("expected Logits, got ") + message_type_name(h.type));
        if (h.payload_size != want * sizeof(float))
          throw ProtocolError("logits of " + std::to_string(h.payload_size) + " bytes, expected " +
                              std::to_string(want * sizeof(float)));
        logits.resize(want);
        ch.read_payload(logits.data(), h.payload_size, deadline);
      });
}

void ProcessRunner::run_step(const StepBatch& step, StepReply reply, const SamplingBatch* sampling,
                             const std::function<void(ControlChannel&, const MessageHeader&,
                                                      Clock::time_point)>& read_rank0) {
  if (!healthy_) throw RunnerError("model runner is not healthy: " + failure_);
  const int64_t seq = next_step_++;
  const auto deadline = deadline_in(options_.step_timeout_s);
  const std::vector<char> to_rank0 = encode_step_message(step, reply, sampling);
  const std::vector<char> to_others = workers_.size() > 1
                                          ? encode_step_message(step, StepReply::kAck, nullptr)
                                          : std::vector<char>{};
  for (Worker& w : workers_)
    guarded(w, "Step", [&] {
      w.channel.send(MessageType::kStep, seq, w.rank == 0 ? to_rank0 : to_others, deadline);
    });
  wait_all(seq, deadline, "step " + std::to_string(step.step), [&](Worker& w) {
    if (w.rank != 0) {
      w.channel.expect(deadline, seq, MessageType::kAck, MessageType::kAck);
      return;
    }
    const MessageHeader h =
        w.channel.expect_header(deadline, seq, MessageType::kTokens, MessageType::kLogits);
    read_rank0(w.channel, h, deadline);
  });
}

// Polls every worker's socket until each one has delivered (handle() consumed) one reply.
void ProcessRunner::wait_all(int64_t seq, Clock::time_point deadline, const std::string& what,
                             const std::function<void(Worker&)>& handle) {
  std::vector<Worker*> pending;
  for (Worker& w : workers_) pending.push_back(&w);
  while (!pending.empty()) {
    std::vector<pollfd> fds;
    for (Worker* w : pending) fds.push_back({w->channel.fd(), POLLIN, 0});
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    const int pr = ::poll(fds.data(), fds.size(), int(std::max<int64_t>(left.count() + 1, 0)));
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) {
      std::string ranks;
      for (Worker* w : pending) ranks += (ranks.empty() ? "" : ", ") + std::to_string(w->rank);
      fail("worker rank(s) " + ranks + " did not answer " + what + " (protocol step " +
           std::to_string(seq) + ") in time: presumed hung");
    }
    std::vector<Worker*> still;
    for (size_t i = 0; i < pending.size(); ++i) {
      if (fds[i].revents == 0) {
        still.push_back(pending[i]);
        continue;
      }
      guarded(*pending[i], what, [&] { handle(*pending[i]); });
    }
    pending.swap(still);
  }
}

void ProcessRunner::guarded(Worker& w, const std::string& what, const std::function<void()>& fn) {
  try {
    fn();
  } catch (const ChannelClosed&) {
    const pid_t pid = w.pid;
    const std::string how = describe_exit(w);
    fail("worker rank " + std::to_string(w.rank) + " (pid " + std::to_string(pid) +
         ") was lost during " + what + ": " + how);
  } catch (const ChannelTimeout&) {
    fail("worker rank " + std::to_string(w.rank) + " timed out during " + what);
  } catch (const ProtocolError& e) {
    fail("worker rank " + std::to_string(w.rank) + " failed during " + what + ": " + e.what());
  }
}

std::string ProcessRunner::describe_exit(Worker& w) {
  if (w.pid <= 0) return "already reaped";
  // EOF can arrive a moment before the process becomes a zombie.
  for (int i = 0; i < 200; ++i) {
    int status = 0;
    const pid_t r = ::waitpid(w.pid, &status, WNOHANG);
    if (r == w.pid) {
      w.pid = -1;
      return status_text(status);
    }
    if (r < 0) return "not a child any more";
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return "closed its control channel";
}

void ProcessRunner::fail(const std::string& why) {
  failure_ = why;
  healthy_ = false;
  spdlog::error("tensor-parallel runner failed: {}", why);
  kill_all();
  throw RunnerError(why);
}

void ProcessRunner::kill_all() {
  for (Worker& w : workers_)
    if (w.pid > 0) ::kill(w.pid, SIGKILL);
  for (Worker& w : workers_) {
    if (w.pid > 0) {
      int status = 0;
      while (::waitpid(w.pid, &status, 0) < 0 && errno == EINTR) {
      }
      w.pid = -1;
    }
    w.channel.close();
  }
}

ProcessRunner::~ProcessRunner() {
  if (healthy_) {
    for (Worker& w : workers_) {
      try {
        w.channel.send(MessageType::kShutdown, next_step_, nullptr, 0, deadline_in(1.0));
      } catch (const std::exception&) {
      }
    }
    const auto deadline = deadline_in(options_.shutdown_timeout_s);
    for (Worker& w : workers_) {
      while (w.pid > 0) {
        int status = 0;
        const pid_t r = ::waitpid(w.pid, &status, WNOHANG);
        if (r == w.pid || r < 0) {
          if (r == w.pid && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
            spdlog::warn("tp worker rank {} {}", w.rank, status_text(status));
          w.pid = -1;
        } else if (Clock::now() > deadline) {
          break;
        } else {
          std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
      }
    }
  }
  healthy_ = false;
  kill_all();
}

bool ProcessRunner::healthy() const {
  if (!healthy_) return false;
  for (pid_t pid : pids_) {
    siginfo_t info{};
    if (::waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0) return false;
    if (info.si_pid != 0) return false;  // exited, not yet noticed by execute()
  }
  return true;
}

std::vector<pid_t> ProcessRunner::worker_pids() const {
  return pids_;
}

}  // namespace mlra
