// The flat forward of one TP rank: embed -> (norm, attention, all-reduce, residual, norm, MLP,
// all-reduce, residual) x L -> final norm -> tied LM head.
#include "models/transformer.h"

#include <stdexcept>

#include "models/step_context.h"
#include "models/tensor_layout.h"
#include "models/weight_loader.h"

namespace mlra {
namespace {

Tensor upload_i32(Backend& b, const std::vector<int32_t>& v) {
  Tensor t = b.alloc({int64_t(std::max<size_t>(v.size(), 1))}, DType::kI32);
  if (!v.empty()) b.upload(t, v.data(), v.size() * sizeof(int32_t));
  return t;
}

void check_step(const StepBatch& s, const CacheOptions& cache, int64_t vocab) {
  const size_t T = s.tokens.size();
  if (s.positions.size() != T || s.token_seq.size() != T || s.slots.size() != T)
    throw std::invalid_argument("step: tokens/positions/token_seq/slots differ in length");
  if (s.page_indptr.empty() || s.page_indptr.front() != 0 ||
      size_t(s.page_indptr.back()) != s.page_indices.size())
    throw std::invalid_argument("step: malformed page_indptr");
  const int64_t capacity = cache.num_pages * cache.page_size;
  for (size_t t = 0; t < T; ++t) {
    if (s.tokens[t] < 0 || s.tokens[t] >= vocab) throw std::invalid_argument("step: token id out of range");
    if (s.slots[t] < 0 || s.slots[t] >= capacity) throw std::invalid_argument("step: cache slot out of range");
    if (s.token_seq[t] < 0 || s.token_seq[t] >= s.num_seqs()) throw std::invalid_argument("step: bad token_seq");
  }
  for (int32_t p : s.page_indices)
    if (p < 0 || p >= cache.num_pages) throw std::invalid_argument("step: page id out of range");
  for (int32_t r : s.logit_rows)
    if (r < 0 || size_t(r) >= T) throw std::invalid_argument("step: logit row out of range");
}

}  // namespace

Transformer::Transformer(const ModelConfig& config, const ShardPlan& plan, const Checkpoint& ckpt,
                         Backend& backend, Communicator& comm, const CacheOptions& cache)
    : config_(config), plan_(plan), backend_(backend), comm_(comm), cache_opts_(cache) {
  if (cache.page_size <= 0 || cache.num_pages <= 0)
    throw std::invalid_argument("transformer: page_size and num_pages must be positive");
  WeightLoader w(ckpt, backend);
  const int64_t d = config.n_embd;
  embedding_ = w.load("transformer.wte.weight");
  final_norm_ = w.load("layernorm.weight");
  const Range ff{plan.ff_begin, plan.ff_end};
  for (int64_t i = 0; i < config.n_layer; ++i) {
    const std::string p = layer_prefix(i);
    Layer layer;
    layer.attn = make_attention_layer(config_, plan_, i, w);
    layer.ln1 = w.load(p + "input_layernorm.weight");
    layer.ln2 = w.load(p + "post_attention_layernorm.weight");
    layer.fc1 = w.load(p + "mlp.c_fc1.weight", {ff, {0, d}});
    layer.fc2 = w.load(p + "mlp.c_fc2.weight", {ff, {0, d}});
    layer.proj = w.load(p + "mlp.c_proj.weight", {{0, d}, ff});
    layer.cache = backend.alloc({cache.num_pages, cache.page_size, plan.cache_width}, backend.cache_dtype());
    layers_.push_back(std::move(layer));
  }
  weight_bytes_ = w.bytes_loaded();
}

int64_t Transformer::cache_bytes_per_token() const {
  return plan_.cache_width * config_.n_layer * int64_t(dtype_size(backend_.cache_dtype()));
}

PagedCacheView Transformer::cache_view(const Layer& layer) const {
  return {layer.cache.data, layer.cache.dtype, cache_opts_.num_pages, cache_opts_.page_size,
          int32_t(plan_.cache_width)};
}

void Transformer::forward(const StepBatch& s, std::vector<float>& logits) {
  logits.clear();
  forward(s, [&](const MatView& out) {
    logits.resize(size_t(out.rows * out.cols));
    backend_.download_f32(out, logits.data());
  });
}

void Transformer::forward(const StepBatch& s, const LogitsConsumer& consume) {
  check_step(s, cache_opts_, config_.vocab_size);
  Backend& b = backend_;
  const int64_t T = s.num_tokens(), d = config_.n_embd, ff = plan_.ff_end - plan_.ff_begin;
  const DType act = b.act_dtype();
  Tensor tokens = upload_i32(b, s.tokens), positions = upload_i32(b, s.positions);
  Tensor token_seq = upload_i32(b, s.token_seq), slots = upload_i32(b, s.slots);
  Tensor indptr = upload_i32(b, s.page_indptr), indices = upload_i32(b, s.page_indices);
  StepContext ctx{s.num_tokens(), s.num_seqs(), tokens.as<int32_t>(), positions.as<int32_t>(),
                  token_seq.as<int32_t>(), slots.as<int32_t>(), indptr.as<int32_t>(),
                  indices.as<int32_t>(), &s};
  ctx.latent_observer = latent_observer_;

  Tensor x = b.alloc({T, d}, DType::kF32);  // residual stream stays float32
  const MatView xm = as_mat(x, d);
  Tensor h = b.alloc({T, d}, act), part = b.alloc({T, d}, act);
  Tensor a1 = b.alloc({T, ff}, act), a2 = b.alloc({T, ff}, act);
  const MatView hm = as_mat(h, d), pm = as_mat(part, d);
  b.embed(ctx.tokens, T, as_mat(embedding_, d), xm);
  for (auto& layer : layers_) {
    b.rms_norm(xm, layer.ln1, config_.norm_eps, 1.0f, hm);
    layer.attn->forward(hm, ctx, cache_view(layer), pm);
    comm_.all_reduce_sum(part.data, T * d, act);
    b.add(pm, xm);
    b.rms_norm(xm, layer.ln2, config_.norm_eps, 1.0f, hm);
    b.linear(hm, as_mat(layer.fc1, d), as_mat(a1, ff), 1.0f, 0.0f);
    b.linear(hm, as_mat(layer.fc2, d), as_mat(a2, ff), 1.0f, 0.0f);
    b.silu_mul(as_mat(a1, ff), as_mat(a2, ff), as_mat(a1, ff));
    b.linear(as_mat(a1, ff), as_mat(layer.proj, ff), pm, 1.0f, 0.0f);
    comm_.all_reduce_sum(part.data, T * d, act);
    b.add(pm, xm);
  }
  if (plan_.rank != 0 || s.logit_rows.empty()) return;
  const int64_t R = int64_t(s.logit_rows.size()), V = config_.vocab_size;
  Tensor rows = b.alloc({R, d}, DType::kF32), normed = b.alloc({R, d}, act);
  Tensor out = b.alloc({R, V}, DType::kF32);
  Tensor row_ids = upload_i32(b, s.logit_rows);
  // Gather the requested rows of the residual with the embedding op (a row gather).
  b.embed(row_ids.as<int32_t>(), R, xm, as_mat(rows, d));
  b.rms_norm(as_mat(rows, d), final_norm_, config_.norm_eps, 1.0f, as_mat(normed, d));
  b.linear(as_mat(normed, d), as_mat(embedding_, d), as_mat(out, V), 1.0f, 0.0f);
  consume(as_mat(out, V));
}

}  // namespace mlra
