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

#include "engine/rank.h"
#include "kernels/shm_communicator.h"

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

ProcessRunner::ProcessRunner(const RunnerConfig& c, const WorkerProcessOptions& process)
    : run_config_(c), process_(process) {
  // The config travels as text: an absolute model_dir names the same folder to every reader.
  run_config_.model_dir = std::filesystem::absolute(c.model_dir);
  config_ = runner_model_config(run_config_);
  int64_t num_pages = shared_page_count(run_config_, config_);  // refuses a bad budget early

  for (char** e = environ; *e; ++e) env_storage_.emplace_back(*e);
  if (!std::getenv("NCCL_NVLS_ENABLE")) env_storage_.emplace_back("NCCL_NVLS_ENABLE=0");
  for (auto& s : env_storage_) envp_.push_back(s.data());
  envp_.push_back(nullptr);

  comm_kind_ = rank_communicator(run_config_);
  if (comm_kind_ == CommunicatorKind::kSharedMemory || comm_kind_ == CommunicatorKind::kHostStaged)
    shm_ = std::make_unique<ShmSegment>(c.tp);
  workers_.reserve(size_t(c.tp));
  try {
    for (int r = 0; r < c.tp; ++r) spawn(r);
  } catch (const std::exception& e) {
    healthy_ = false;
    kill_all();
    throw RunnerError(std::string("cannot start workers: ") + e.what());
  }
  load();
  if (c.gpu_memory_fraction > 0) num_pages = allocate_gpu_sized_cache();
  if (shm_) shm_->unlink();

  info_ = runner_info(run_config_, config_, ready_, num_pages);
  for (const RankInfo& r : info_.ranks)
    spdlog::info(
        "tp rank {} (pid {}, {}, device {}, {} all-reduce): weights {:.1f} MB, cache {} "
        "values/token/layer = {} bytes/token, {} pages x {}",
        r.rank, r.pid, r.backend, r.device, r.communicator, r.weight_bytes / 1e6,
        r.cache_values_per_token_per_layer, r.cache_bytes_per_token, r.num_pages, c.page_size);
}

void ProcessRunner::spawn(int rank) {
  auto [parent_fd, child_fd] = make_socket_pair();
  const std::string binary =
      process_.worker_binary.empty() ? "/proc/self/exe" : process_.worker_binary.string();
  std::vector<std::string> args = {
      binary, "worker", "--rank", std::to_string(rank), "--fd", std::to_string(child_fd)};
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

void ProcessRunner::load() {
  const auto deadline = deadline_in(process_.load_timeout_s);
  const std::vector<char> init = encode(WorkerInit{run_config_, shm_ ? shm_->name() : ""});
  for (Worker& w : workers_)
    guarded(w, "Init", [&] { w.channel.send(MessageType::kInit, 0, init, deadline); });
  if (comm_kind_ == CommunicatorKind::kNccl) {
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
    RankInfo r = decode_rank_info(m.payload);
    if (r.rank != w.rank)
      throw ProtocolError("Ready from rank " + std::to_string(r.rank) + " on rank " +
                          std::to_string(w.rank) + "'s channel");
    ready_[size_t(w.rank)] = std::move(r);
  });
}

int64_t ProcessRunner::allocate_gpu_sized_cache() {
  int64_t pages = 0;
  try {
    pages = settle_gpu_pages(run_config_, ready_);
  } catch (const RunnerError&) {
    healthy_ = false;
    kill_all();
    throw;
  }
  const auto deadline = deadline_in(process_.load_timeout_s);
  ByteWriter w;
  w.put(pages);
  for (Worker& worker : workers_)
    guarded(worker, "Allocate",
            [&] { worker.channel.send(MessageType::kAllocate, 0, w.bytes(), deadline); });
  wait_all(0, deadline, "Allocate", [&](Worker& worker) {
    worker.channel.expect(deadline, 0, MessageType::kAck, MessageType::kAck);
  });
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
  const auto deadline = deadline_in(process_.step_timeout_s);
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
    const auto deadline = deadline_in(process_.shutdown_timeout_s);
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
