// The GPU decode tests' shared models and sequences (gpu_decode_fixture.h).
#include "gpu_decode_fixture.h"

#include <filesystem>
#include <numeric>
#include <stdexcept>

#include "../step_builder.h"

namespace mlra::gputest {
namespace {

DecodeModel decode_model(std::unique_ptr<Backend> backend, const ModelConfig& c,
                         const ShardPlan& plan, const Checkpoint& ckpt, const CacheOptions& cache,
                         int graph_batch, int64_t row_align) {
  DecodeModel m;
  m.backend = std::move(backend);
  m.comm = make_single_rank_communicator();
  m.model = std::make_unique<Transformer>(c, plan, ckpt, *m.backend, *m.comm, cache, row_align);
  if (graph_batch > 0) m.model->enable_decode_graphs(graph_batch);
  return m;
}

}  // namespace

RunnerConfig tiny_runner_config(const std::string& variant, const std::string& backend,
                                int graph_batch) {
  RunnerConfig o;
  o.model_dir = std::filesystem::path(MLRA_TEST_DATA) / "tiny" / variant;
  o.variant = variant;
  o.backend = backend;
  o.page_size = 16;
  o.num_pages = 64;
  o.cuda_graph_max_batch = graph_batch;
  return o;
}

TinyModel tiny_model(const std::string& variant) {
  const auto dir = std::filesystem::path(MLRA_TEST_DATA) / "tiny" / variant;
  return {load_model_config(dir / "config.json", *parse_variant(variant)), Checkpoint::open(dir)};
}

ModelConfig release_head_config(const std::string& dir, int64_t ff) {
  ModelConfig c = load_model_config(
      std::filesystem::path(MLRA_SOURCE_DIR) / "configs/2.9b" / dir / "config.json",
      *parse_variant(dir));
  c.n_layer = 2;
  c.n_head = 8;
  c.n_embd = 1024;
  if (c.q_lora_rank > 0) c.q_lora_rank = 256;
  c.intermediate_size = ff;
  c.vocab_size = 512;
  c.text_vocab_size = 512;
  c.eot_token = 511;
  c.validate();
  return c;
}

std::vector<StepBatch> prefill_then_decode_steps(uint32_t seed, int decodes) {
  std::mt19937 rng(seed);
  auto toks = [&](int n) {
    std::vector<int32_t> t(static_cast<size_t>(n));
    for (auto& x : t) x = int32_t(rng() % 500);
    return t;
  };
  using testing::build_step;
  std::vector<StepBatch> steps;
  steps.push_back(build_step({{0, 0, toks(300), true}, {1, 0, toks(200), true}}, 16, 32));
  steps.push_back(
      build_step({{0, 300, toks(1)}, {1, 200, toks(150), true}, {2, 0, toks(130), true}}, 16, 32));
  for (int32_t i = 0; i < decodes; ++i)
    steps.push_back(
        build_step({{0, 301 + i, toks(1)}, {1, 350 + i, toks(1)}, {2, 130 + i, toks(1)}}, 16, 32));
  return steps;
}

const std::vector<float>& DecodeModel::forward(const StepBatch& step) {
  model->forward(step, logits);
  return logits;
}

DecodeModel cpu_model(const ModelConfig& c, const ShardPlan& plan, const Checkpoint& ckpt,
                      const CacheOptions& cache, int64_t row_align) {
  return decode_model(make_cpu_backend(), c, plan, ckpt, cache, 0, row_align);
}

DecodeModel cuda_model(const ModelConfig& c, const ShardPlan& plan, const Checkpoint& ckpt,
                       const CacheOptions& cache, const KernelOptions& options, int graph_batch,
                       int64_t row_align) {
  return decode_model(make_cuda_backend(0, options), c, plan, ckpt, cache, graph_batch, row_align);
}

void forward_all(const std::vector<DecodeModel*>& models, const StepBatch& step) {
  for (DecodeModel* m : models) m->forward(step);
}

DecodeSequences::DecodeSequences(const Spec& spec, int64_t vocab)
    : spec_(spec),
      vocab_(uint32_t(vocab)),
      rng_(spec.seed),
      length_(size_t(spec.seqs)),
      next_(size_t(spec.seqs)) {
  if (spec.seqs < 1 || vocab < 1 || spec.prompt_base < 1 || spec.prompt_step < 0)
    throw std::invalid_argument("DecodeSequences: a sequence, a token and a prompt at least");
}

CacheOptions DecodeSequences::cache(CacheEncoding encoding) const {
  return {kPage, int64_t(size()) * kPagesPerSeq, encoding};
}

StepBatch DecodeSequences::prefill() {
  if (prefilled_) throw std::logic_error("DecodeSequences: prefilled twice");
  prefilled_ = true;
  std::vector<testing::SeqChunk> chunks;
  for (int s = 0; s < size(); ++s) {
    std::vector<int32_t> prompt(size_t(spec_.prompt_base + spec_.prompt_step * s));
    for (auto& t : prompt) t = draw();
    chunks.push_back({s, 0, prompt, false});
    length_[size_t(s)] = int32_t(prompt.size());
    if (spec_.draw_ahead) next_[size_t(s)] = draw();
  }
  return testing::build_step(chunks, kPage, kPagesPerSeq);
}

StepBatch DecodeSequences::decode(int batch, const std::function<int(int)>& pick) {
  std::vector<int> seqs;
  std::vector<int32_t> tokens;
  for (int i = 0; i < batch; ++i) {
    const int s = pick(i);
    if (s < 0 || s >= size()) throw std::out_of_range("DecodeSequences: no such sequence");
    seqs.push_back(s);
    if (!spec_.draw_ahead) {
      tokens.push_back(draw());
      continue;
    }
    tokens.push_back(next_[size_t(s)]);
    next_[size_t(s)] = draw();
  }
  return build(seqs, tokens);
}

StepBatch DecodeSequences::decode_strided(int batch, int stride) {
  if (batch > size() || std::gcd(stride, size()) != 1)
    throw std::invalid_argument("DecodeSequences: strided picks would repeat a sequence");
  return decode(batch, [&](int i) { return (i * stride + batch) % size(); });
}

StepBatch DecodeSequences::decode(const std::vector<int>& seqs,
                                  const std::vector<int32_t>& tokens) {
  if (tokens.size() != seqs.size())
    throw std::invalid_argument("DecodeSequences: one token a sequence");
  for (const int s : seqs)
    if (s < 0 || s >= size()) throw std::out_of_range("DecodeSequences: no such sequence");
  return build(seqs, tokens);
}

StepBatch DecodeSequences::build(const std::vector<int>& seqs, const std::vector<int32_t>& tokens) {
  if (!prefilled_) throw std::logic_error("DecodeSequences: decode before prefill");
  std::vector<testing::SeqChunk> chunks;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const size_t s = size_t(seqs[i]);
    chunks.push_back({seqs[i], length_[s], {tokens[i]}, false});
    ++length_[s];
  }
  return testing::build_step(chunks, kPage, kPagesPerSeq);
}

}  // namespace mlra::gputest
