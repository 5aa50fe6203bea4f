// Engine: the single engine thread (schedule -> execute + sample in the runner -> emit) and the
// thread-safe inbox that submit/cancel/shutdown use. Scheduler, BlockManager and all Sequences are
// touched only by the engine thread; other threads see a stats snapshot under the mutex.
#include "engine/engine.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "engine/block_manager.h"
#include "engine/output_stream.h"
#include "engine/prompt_logprobs.h"
#include "engine/request_validator.h"
#include "engine/sampler.h"
#include "engine/sampling_batch_builder.h"
#include "engine/scheduler.h"
#include "engine/sequence.h"

namespace mlra {

namespace {

EngineOptions resolve_options(EngineOptions o, const RunnerInfo& info) {
  if (o.page_size == 0) o.page_size = info.page_size;
  if (o.page_size != info.page_size) {
    throw std::invalid_argument(fmt::format("engine page_size {} differs from the runner's {}",
                                            o.page_size, info.page_size));
  }
  if (o.num_pages == 0) o.num_pages = info.num_pages;
  if (o.num_pages <= 0 || o.num_pages > info.num_pages) {
    throw std::invalid_argument(
        fmt::format("engine num_pages {} not in [1, {}]", o.num_pages, info.num_pages));
  }
  if (o.max_context == 0) o.max_context = info.max_context;
  // A lone sequence must always fit, or the scheduler could wait forever.
  o.max_context = std::min<int64_t>(o.max_context, o.num_pages * o.page_size);
  if (o.max_context <= 0) throw std::invalid_argument("engine max_context must be positive");
  return o;
}

}  // namespace

struct Engine::Impl {
  using Clock = SequenceTimes::Clock;
  struct Pending {
    uint64_t handle;
    GenerationRequest request;
    ChunkCallback on_chunk;
    uint64_t seed;
    Clock::time_point arrival;
  };
  struct Active {
    std::unique_ptr<Sequence> seq;
    std::string request_id;
    ChunkCallback on_chunk;
    std::unique_ptr<OutputStream> output;
    std::vector<TokenLogprobs> prompt_logprobs;  // scored so far (params.prompt_logprobs >= 0)
    bool prompt_logprobs_sent = false;
  };

  Impl(std::unique_ptr<ModelRunner> r, TokenStreamDecoderFactory factory, EngineOptions o)
      : runner(std::move(r)),
        make_decoder(std::move(factory)),
        config(runner->config()),
        info(runner->info()),
        options(resolve_options(o, info)),
        limits{config.text_vocab_size, options.max_context, options.max_stop_strings,
               options.max_logprobs},
        blocks(options.num_pages, options.page_size, options.enable_prefix_cache),
        scheduler(blocks, SchedulerOptions{options.max_running_seqs, options.max_step_tokens}),
        sampling(config.text_vocab_size),
        metrics(options.metrics ? options.metrics : std::make_shared<EngineMetrics>()),
        seed_rng(std::random_device{}()) {
    publish_stats();
  }

  void run();
  void admit(Pending&& p);
  void step();
  void process_sampled(Sequence* seq, int64_t row);
  void finish(uint64_t handle, GenerationChunk&& chunk);
  void finish_all(FinishReason reason, const std::string& message);
  void emit(Active& a, GenerationChunk&& chunk);
  void publish_stats();
  void keep_prompt_scores(const ScheduledStep& plan, std::vector<PromptScores>& scores);
  // Metrics hooks (engine thread): timestamps and per-step samples, reported once per step.
  StepMetrics begin_step_metrics(const ScheduledStep& plan);
  void end_step_metrics(StepMetrics& m, Clock::time_point execute_start);
  void note_token_time(Sequence& seq);
  void report_finished(Sequence& seq, const GenerationChunk& final_chunk);

  std::unique_ptr<ModelRunner> runner;
  TokenStreamDecoderFactory make_decoder;
  ModelConfig config;
  RunnerInfo info;
  EngineOptions options;
  RequestLimits limits;

  // Engine thread only.
  BlockManager blocks;
  Scheduler scheduler;
  SamplingBatchBuilder sampling;  // this step's sampling rows, shipped with the plan
  std::unordered_map<uint64_t, Active> active;
  SampledTokens sampled;  // the runner's tokens for them
  std::unique_ptr<TokenSampler>
      cpu_sampler;  // scoring steps sample on the host (prompt_logprobs.h)
  int64_t prompt_tokens = 0, generated_tokens = 0, requests_finished = 0;
  int32_t idle_steps = 0;
  std::shared_ptr<EngineMetrics> metrics;  // never null (base class = no-op)
  Clock::time_point step_clock;            // when this step's tokens appeared
  std::vector<double> step_ttft, step_itl, step_queue;

  // Shared, under mu.
  mutable std::mutex mu;
  std::condition_variable cv;
  std::vector<Pending> inbox;
  std::vector<uint64_t> cancels;
  bool stop_requested = false;
  bool drain = false;
  uint64_t next_handle = 1;
  std::mt19937_64 seed_rng;
  EngineStats snapshot;
  std::function<void(const std::string&)> on_failure;
  std::atomic<bool> healthy{true};
  std::mutex join_mu;  // serialises concurrent shutdown() calls around join
  std::thread thread;
};

void Engine::Impl::run() {
  for (;;) {
    std::vector<Pending> incoming;
    std::vector<uint64_t> cancelled;
    bool stopping, draining;
    {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] {
        return !inbox.empty() || !cancels.empty() || stop_requested || scheduler.has_work();
      });
      incoming.swap(inbox);
      cancelled.swap(cancels);
      stopping = stop_requested;
      draining = drain;
    }
    for (Pending& p : incoming) admit(std::move(p));
    if (!incoming.empty()) publish_stats();  // submit() counts queued requests from the snapshot
    for (uint64_t h : cancelled) {
      GenerationChunk chunk;
      chunk.finish_reason = FinishReason::kCancelled;
      finish(h, std::move(chunk));
    }
    if (stopping && !draining) finish_all(FinishReason::kAborted, "server shutting down");
    if (stopping && !scheduler.has_work()) break;
    if (scheduler.has_work()) step();
    publish_stats();
  }
  publish_stats();
}

void Engine::Impl::admit(Pending&& p) {
  auto seq = std::make_unique<Sequence>();
  seq->id = p.handle;
  seq->tokens = std::move(p.request.prompt_tokens);
  seq->num_prompt = seq->size();
  seq->params = std::move(p.request.params);
  seq->seed = p.seed;
  seq->times.arrival = p.arrival;
  prompt_tokens += seq->num_prompt;
  Active a;
  a.output = std::make_unique<OutputStream>(seq->params, static_cast<int32_t>(config.eot_token),
                                            make_decoder());
  a.seq = std::move(seq);
  a.request_id = std::move(p.request.request_id);
  a.on_chunk = std::move(p.on_chunk);
  scheduler.add(a.seq.get());
  active.emplace(p.handle, std::move(a));
}

void Engine::Impl::step() {
  ScheduledStep plan = scheduler.schedule();
  if (plan.empty()) {
    // Only transient (a sequence preempted itself); twice in a row would mean no progress.
    if (++idle_steps > 2 && !scheduler.waiting().empty()) {
      GenerationChunk chunk;
      chunk.finish_reason = FinishReason::kError;
      chunk.error_message = "request does not fit in the cache";
      finish(scheduler.waiting().front()->id, std::move(chunk));
    }
    return;
  }
  idle_steps = 0;
  StepMetrics step_metrics = begin_step_metrics(plan);
  const Clock::time_point execute_start = Clock::now();
  sampling.clear();
  for (const ScheduledSeq& s : plan.seqs)
    if (s.sample) sampling.add(s.seq->tokens, s.seq->num_prompt, s.seq->params, s.seq->seed);
  std::vector<PromptScores> scores;
  try {
    if (step_scores_prompts(plan)) {
      if (!cpu_sampler) cpu_sampler = make_cpu_token_sampler(config.text_vocab_size);
      scores = execute_scoring_step(*runner, *cpu_sampler, plan, sampling.batch(), sampled);
    } else {
      runner->execute(plan.batch, sampling.batch(), sampled);
    }
    sampled.check(sampling.batch().size());
    if (!runner->healthy()) throw RunnerError("runner reports unhealthy");
  } catch (const std::exception& e) {
    spdlog::error("engine: runner failed at step {}: {}", plan.batch.step, e.what());
    healthy = false;
    std::function<void(const std::string&)> report;
    {
      std::lock_guard lock(mu);
      stop_requested = true;
      drain = false;
      report = on_failure;
    }
    if (report) report(e.what());
    finish_all(FinishReason::kError, fmt::format("unavailable: {}", e.what()));
    return;
  }
  step_clock = Clock::now();
  keep_prompt_scores(plan, scores);
  scheduler.on_step_done(plan);
  int64_t row = 0;
  for (const ScheduledSeq& s : plan.seqs) {
    if (s.sample) process_sampled(s.seq, row++);
  }
  end_step_metrics(step_metrics, execute_start);
}

void Engine::Impl::keep_prompt_scores(const ScheduledStep& plan,
                                      std::vector<PromptScores>& scores) {
  for (size_t i = 0; i < scores.size(); ++i) {
    Active& a = active.at(plan.seqs[i].seq->id);
    // A recomputed prompt (after preemption) scores again what was already kept: skip it.
    const int32_t have = 1 + static_cast<int32_t>(a.prompt_logprobs.size());
    const int32_t skip = have - scores[i].first_target;
    if (a.prompt_logprobs_sent || skip < 0) continue;
    auto& entries = scores[i].entries;
    for (size_t k = static_cast<size_t>(skip); k < entries.size(); ++k) {
      a.prompt_logprobs.push_back(std::move(entries[k]));
    }
  }
}

void Engine::Impl::process_sampled(Sequence* seq, int64_t row) {
  Active& scored = active.at(seq->id);
  if (seq->params.max_tokens == 0) {  // scoring only: the prompt's logprobs, no token
    GenerationChunk chunk;
    chunk.finish_reason = FinishReason::kLength;
    chunk.prompt_logprobs = std::move(scored.prompt_logprobs);
    scored.prompt_logprobs_sent = true;
    finish(seq->id, std::move(chunk));
    return;
  }
  const bool want_logprobs = seq->params.logprobs > 0;
  TokenLogprobs lp = want_logprobs ? token_logprobs(sampled, row) : TokenLogprobs{};
  const int32_t token = sampled.tokens[size_t(row)];
  seq->tokens.push_back(token);
  ++generated_tokens;
  Active& a = active.at(seq->id);
  GenerationChunk chunk =
      a.output->on_token(token, seq->num_generated(), want_logprobs ? &lp : nullptr);
  if (seq->params.prompt_logprobs >= 0 && !a.prompt_logprobs_sent) {
    chunk.prompt_logprobs = std::move(a.prompt_logprobs);
    a.prompt_logprobs_sent = true;
  }
  if (chunk.finish_reason != FinishReason::kNone) {
    finish(seq->id, std::move(chunk));
  } else {
    emit(a, std::move(chunk));
  }
}

void Engine::Impl::emit(Active& a, GenerationChunk&& chunk) {
  // A final chunk's token was timed by report_finished().
  if (chunk.finish_reason == FinishReason::kNone && !chunk.token_ids.empty())
    note_token_time(*a.seq);
  try {
    a.on_chunk(std::move(chunk));
  } catch (const std::exception& e) {
    spdlog::error("engine: chunk callback of request '{}' threw: {}", a.request_id, e.what());
  }
}

void Engine::Impl::finish(uint64_t handle, GenerationChunk&& chunk) {
  auto it = active.find(handle);
  if (it == active.end()) return;
  Active& a = it->second;
  Sequence* seq = a.seq.get();
  scheduler.finish(seq);
  chunk.usage.prompt_tokens = seq->num_prompt;
  chunk.usage.completion_tokens = seq->num_generated();
  chunk.usage.cached_prompt_tokens = std::max(seq->num_cached_prompt, 0);
  spdlog::debug("engine: request {} '{}' finished: {} ({} + {} tokens)", handle, a.request_id,
                finish_reason_name(chunk.finish_reason), seq->num_prompt, seq->num_generated());
  report_finished(*seq, chunk);
  emit(a, std::move(chunk));
  ++requests_finished;
  active.erase(it);
}

void Engine::Impl::finish_all(FinishReason reason, const std::string& message) {
  std::vector<uint64_t> handles;
  for (const auto& [h, a] : active) handles.push_back(h);
  std::sort(handles.begin(), handles.end());
  for (uint64_t h : handles) {
    GenerationChunk chunk;
    chunk.finish_reason = reason;
    if (reason == FinishReason::kError) chunk.error_message = message;
    finish(h, std::move(chunk));
  }
}

StepMetrics Engine::Impl::begin_step_metrics(const ScheduledStep& plan) {
  step_ttft.clear();
  step_itl.clear();
  step_queue.clear();
  StepMetrics m;
  m.num_tokens = plan.batch.num_tokens();
  const Clock::time_point now = Clock::now();
  for (const ScheduledSeq& s : plan.seqs) {
    SequenceTimes& t = s.seq->times;
    if (t.first_scheduled == Clock::time_point{}) {
      t.first_scheduled = now;
      step_queue.push_back(std::chrono::duration<double>(now - t.arrival).count());
    }
    if (s.num_tokens == 1) {
      ++m.num_decode_seqs;
      // The new token attends to every cached position before it and to itself.
      m.decode_cache_bytes_read_per_rank +=
          (int64_t{s.seq->num_computed} + 1) * info.cache_bytes_per_token;
    }
  }
  return m;
}

void Engine::Impl::end_step_metrics(StepMetrics& m, Clock::time_point execute_start) {
  m.execute_seconds = std::chrono::duration<double>(step_clock - execute_start).count();
  m.time_to_first_token_s = step_ttft;
  m.inter_token_latency_s = step_itl;
  m.queue_time_s = step_queue;
  metrics->on_step(m);
}

void Engine::Impl::note_token_time(Sequence& seq) {
  SequenceTimes& t = seq.times;
  if (t.first_token == Clock::time_point{}) {
    t.first_token = step_clock;
    step_ttft.push_back(std::chrono::duration<double>(step_clock - t.arrival).count());
  } else {
    step_itl.push_back(std::chrono::duration<double>(step_clock - t.last_token).count());
  }
  t.last_token = step_clock;
}

void Engine::Impl::report_finished(Sequence& seq, const GenerationChunk& final_chunk) {
  if (!final_chunk.token_ids.empty()) note_token_time(seq);
  const SequenceTimes& t = seq.times;
  auto seconds = [](Clock::duration d) { return std::chrono::duration<double>(d).count(); };
  RequestMetrics m;
  m.finish_reason = final_chunk.finish_reason;
  m.prompt_tokens = seq.num_prompt;
  m.generation_tokens = seq.num_generated();
  m.e2e_s = seconds(Clock::now() - t.arrival);
  if (t.first_token != Clock::time_point{}) {
    m.prefill_s = seconds(t.first_token - t.first_scheduled);
    m.decode_s = seconds(t.last_token - t.first_token);
    if (m.generation_tokens > 1) m.time_per_output_token_s = m.decode_s / (m.generation_tokens - 1);
  }
  metrics->on_request_finished(m);
}

void Engine::Impl::publish_stats() {
  EngineStats s;
  s.running = static_cast<int64_t>(scheduler.running().size());
  s.waiting = static_cast<int64_t>(scheduler.waiting().size());
  s.pages_used = blocks.num_used();
  s.pages_cached = blocks.num_cached();
  s.pages_total = blocks.num_pages();
  s.page_size = blocks.page_size();
  s.prefix_hit_tokens = scheduler.prefix_hit_tokens();
  s.prefix_query_tokens = scheduler.prefix_query_tokens();
  s.prompt_tokens = prompt_tokens;
  s.generated_tokens = generated_tokens;
  s.preemptions = scheduler.num_preemptions();
  s.steps = scheduler.num_steps();
  s.requests_finished = requests_finished;
  s.max_context = options.max_context;
  std::lock_guard lock(mu);
  snapshot = s;
}

Engine::Engine(std::unique_ptr<ModelRunner> runner, TokenStreamDecoderFactory make_decoder,
               EngineOptions options)
    : impl_(std::make_unique<Impl>(std::move(runner), std::move(make_decoder), options)) {
  impl_->thread = std::thread([this] { impl_->run(); });
}

Engine::~Engine() {
  shutdown(false);
}

std::optional<RequestError> Engine::validate(const GenerationRequest& request) const {
  return validate_request(request, impl_->limits);
}

uint64_t Engine::submit(GenerationRequest request, ChunkCallback on_chunk) {
  if (auto error = validate(request)) throw *error;
  std::lock_guard lock(impl_->mu);
  if (impl_->stop_requested || !impl_->healthy) {
    throw RequestError(ErrorCode::kUnavailable,
                       impl_->healthy ? "server is shutting down" : "engine is unavailable");
  }
  const int64_t queued = static_cast<int64_t>(impl_->inbox.size()) + impl_->snapshot.waiting;
  if (queued >= impl_->options.max_waiting) {
    throw RequestError(ErrorCode::kResourceExhausted,
                       fmt::format("too many queued requests ({}); retry later", queued));
  }
  const uint64_t handle = impl_->next_handle++;
  const uint64_t seed = request.params.seed ? *request.params.seed : impl_->seed_rng();
  impl_->inbox.push_back(
      {handle, std::move(request), std::move(on_chunk), seed, Impl::Clock::now()});
  impl_->cv.notify_one();
  return handle;
}

void Engine::cancel(uint64_t handle) {
  std::lock_guard lock(impl_->mu);
  impl_->cancels.push_back(handle);
  impl_->cv.notify_one();
}

EngineStats Engine::stats() const {
  std::lock_guard lock(impl_->mu);
  return impl_->snapshot;
}

// The runner's own view catches a worker lost while the engine is idle (no step to fail).
bool Engine::healthy() const {
  return impl_->healthy && impl_->runner->healthy();
}

void Engine::set_failure_callback(std::function<void(const std::string&)> callback) {
  std::lock_guard lock(impl_->mu);
  impl_->on_failure = std::move(callback);
}

void Engine::shutdown(bool drain) {
  {
    std::lock_guard lock(impl_->mu);
    if (!impl_->stop_requested) impl_->drain = drain;
    if (!drain) impl_->drain = false;
    impl_->stop_requested = true;
    impl_->cv.notify_one();
  }
  std::lock_guard join_lock(impl_->join_mu);
  if (impl_->thread.joinable()) impl_->thread.join();
}

const ModelConfig& Engine::model_config() const {
  return impl_->config;
}
RunnerInfo Engine::runner_info() const {
  return impl_->info;
}
const EngineOptions& Engine::options() const {
  return impl_->options;
}

}  // namespace mlra
