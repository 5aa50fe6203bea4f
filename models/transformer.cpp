// The flat forward of one TP rank: embed -> (norm, attention, all-reduce, residual, norm, MLP,
// all-reduce, residual) x L -> final norm -> tied LM head.
#include "models/transformer.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "models/cache_shape.h"
#include "models/latent_expansion.h"
#include "models/step_context.h"
#include "models/tensor_layout.h"
#include "models/weight_loader.h"

namespace mlra {
namespace {

void check_step(const StepBatch& s, const CacheOptions& cache, int64_t vocab) {
  const size_t T = s.tokens.size();
  if (s.positions.size() != T || s.token_seq.size() != T || s.slots.size() != T)
    throw std::invalid_argument("step: tokens/positions/token_seq/slots differ in length");
  if (s.page_indptr.empty() || s.page_indptr.front() != 0 ||
      size_t(s.page_indptr.back()) != s.page_indices.size())
    throw std::invalid_argument("step: malformed page_indptr");
  const int64_t capacity = cache.num_pages * cache.page_size;
  for (size_t t = 0; t < T; ++t) {
    if (s.tokens[t] < 0 || s.tokens[t] >= vocab)
      throw std::invalid_argument("step: token id out of range");
    if (s.slots[t] < 0 || s.slots[t] >= capacity)
      throw std::invalid_argument("step: cache slot out of range");
    if (s.token_seq[t] < 0 || s.token_seq[t] >= s.num_seqs())
      throw std::invalid_argument("step: bad token_seq");
  }
  for (int32_t p : s.page_indices)
    if (p < 0 || p >= cache.num_pages) throw std::invalid_argument("step: page id out of range");
  for (int32_t r : s.logit_rows)
    if (r < 0 || size_t(r) >= T) throw std::invalid_argument("step: logit row out of range");
}

}  // namespace

Transformer::Transformer(const ModelConfig& config, const ShardPlan& plan, const Checkpoint& ckpt,
                         Backend& backend, Communicator& comm, const CacheOptions& cache,
                         int64_t row_align)
    : config_(config), plan_(plan), backend_(backend), comm_(comm), cache_opts_(cache) {
  if (cache.page_size <= 0 || cache.num_pages < 0)
    throw std::invalid_argument("transformer: page_size must be positive and num_pages >= 0");
  if (!backend.supports_cache_encoding(cache.encoding))
    throw std::invalid_argument(std::string("transformer: kv_cache_dtype ") +
                                kv_cache_dtype_name(cache.encoding) + " is not supported by the " +
                                backend.name() + " backend");
  if (cache.encoding == CacheEncoding::kFp8E4M3) fp8_layout_ = fp8_cache_layout(config, plan);
  WeightLoader w(ckpt, backend);
  const int64_t d = config.n_embd;
  embedding_ = w.load("transformer.wte.weight");
  final_norm_ = w.load("layernorm.weight");
  const Range ff{plan.ff_begin, plan.ff_end};
  if (row_align < 1) throw std::invalid_argument("transformer: row_align must be >= 1");
  ff_ld_ = padded_ld(plan.ff_end - plan.ff_begin, row_align);
  for (int64_t i = 0; i < config.n_layer; ++i) {
    const std::string p = layer_prefix(i);
    Layer layer;
    layer.attn = make_attention_layer(config_, plan_, i, w);
    layer.ln1 = w.load(p + "input_layernorm.weight");
    layer.ln2 = w.load(p + "post_attention_layernorm.weight");
    // [W_fc1; W_fc2] local rows back to back: both halves of SwiGLU in one product.
    std::vector<float> fc = w.read(p + "mlp.c_fc1.weight", {ff, {0, d}});
    const std::vector<float> fc2 = w.read(p + "mlp.c_fc2.weight", {ff, {0, d}});
    fc.insert(fc.end(), fc2.begin(), fc2.end());
    layer.fc12 = w.upload(fc, {2 * (ff.second - ff.first), d});
    // K = the rank's intermediate rows, often not a multiple of 8 (9880 / 4): padded rows keep
    // the product on the GEMV (kernels/gemv.h).
    layer.proj = w.load_padded(p + "mlp.c_proj.weight", {{0, d}, ff}, row_align);
    layers_.push_back(std::move(layer));
  }
  weight_bytes_ = w.bytes_loaded();
  if (cache.num_pages > 0) allocate_cache(cache.num_pages);
}

void Transformer::allocate_cache(int64_t num_pages) {
  if (num_pages <= 0) throw std::invalid_argument("transformer: the cache needs at least one page");
  graphs_.clear();
  cache_opts_.num_pages = num_pages;
  // One scratch page past the scheduler's pages: padded rows of decode graphs write there.
  const bool fp8 = cache_opts_.encoding == CacheEncoding::kFp8E4M3;
  for (auto& layer : layers_)
    layer.cache =
        fp8 ? backend_.alloc({num_pages + 1, fp8_layout_.page_bytes(cache_opts_.page_size)},
                             DType::kU8)
            : backend_.alloc({num_pages + 1, cache_opts_.page_size, plan_.cache_width},
                             backend_.cache_dtype());
}

int64_t Transformer::cache_bytes_per_token() const {
  return cache_row_bytes(config_, plan_, cache_opts_.encoding,
                         int64_t(dtype_size(backend_.cache_dtype()))) *
         config_.n_layer;
}

PagedCacheView Transformer::cache_view(const Layer& layer) const {
  PagedCacheView v{layer.cache.data, layer.cache.dtype, cache_opts_.num_pages + 1,
                   cache_opts_.page_size, int32_t(plan_.cache_width)};
  v.encoding = cache_opts_.encoding;
  v.fp8 = fp8_layout_;
  return v;
}

void Transformer::forward(const StepBatch& s, std::vector<float>& logits) {
  logits.clear();
  forward(s, [&](const MatView& out) {
    logits.resize(size_t(out.rows * out.cols));
    backend_.download_f32(out, logits.data());
  });
}

void Transformer::forward(const StepBatch& s, const LogitsConsumer& consume) {
  if (cache_opts_.num_pages == 0)
    throw std::logic_error("transformer: forward before allocate_cache");
  check_step(s, cache_opts_, config_.vocab_size);
  const int padded = !latent_observer_ && is_pure_decode(s) ? decode_graph_size(s.num_tokens()) : 0;
  if (padded > 0) return forward_graph(s, padded, consume);
  forward_eager(s, consume);
}

void Transformer::run_body(const StepContext& ctx, const int32_t* row_ids, int64_t rows,
                           const MatView& logits) {
  Backend& b = backend_;
  const int64_t T = ctx.num_tokens, d = config_.n_embd, ff = plan_.ff_end - plan_.ff_begin;
  const DType act = b.act_dtype();
  // Every layer's attention shares the step's split-KV plan (computed by the first layer).
  struct StepScope {
    Backend& b;
    explicit StepScope(Backend& backend) : b(backend) { b.begin_step(); }
    ~StepScope() { b.end_step(); }
  } step_scope(b);
  Tensor x = b.alloc({T, d}, DType::kF32);  // residual stream stays float32
  const MatView xm = as_mat(x, d);
  Tensor h = b.alloc({T, d}, act), part = b.alloc({T, d}, act);
  Tensor a1 = b.alloc({T, ff_ld_}, act);  // columns ff.. are pad, never read into a result
  const MatView hm = as_mat(h, d), pm = as_mat(part, d), a1m{a1.data, act, T, ff, ff_ld_};
  b.embed(ctx.tokens, T, as_mat(embedding_, d), xm);
  if (!layers_.empty()) b.rms_norm(xm, layers_.front().ln1, config_.norm_eps, 1.0f, hm);
  for (size_t i = 0; i < layers_.size(); ++i) {
    Layer& layer = layers_[i];
    layer.attn->forward(hm, ctx, cache_view(layer), pm);
    comm_.all_reduce_sum(part.data, T * d, act);
    // Each residual add is fused into the norm that reads the sum next; the MLP half up to its
    // all-reduce is one op (the residual add, norm, SwiGLU and down products).
    const MatView proj{layer.proj.data, layer.proj.dtype, d, ff, ff_ld_};
    b.mlp_block({pm, xm, layer.ln2, config_.norm_eps, as_mat(layer.fc12, d), proj, hm, a1m, pm});
    comm_.all_reduce_sum(part.data, T * d, act);
    if (i + 1 < layers_.size())
      b.add_rms_norm(pm, xm, layers_[i + 1].ln1, config_.norm_eps, hm);
    else
      b.add(pm, xm);
  }
  if (plan_.rank != 0 || rows == 0) return;
  Tensor gathered = b.alloc({rows, d}, DType::kF32), normed = b.alloc({rows, d}, act);
  // Gather the requested rows of the residual with the embedding op (a row gather).
  b.embed(row_ids, rows, xm, as_mat(gathered, d));
  b.rms_norm(as_mat(gathered, d), final_norm_, config_.norm_eps, 1.0f, as_mat(normed, d));
  b.linear(as_mat(normed, d), as_mat(embedding_, d), logits, 1.0f, 0.0f);
}

void Transformer::forward_eager(const StepBatch& s, const LogitsConsumer& consume) {
  Backend& b = backend_;
  const int64_t T = s.num_tokens(), S = s.num_seqs(), R = int64_t(s.logit_rows.size());
  // One staged copy of every per-step array: [tokens | positions | token_seq | slots | indptr |
  // logit rows | page indices].
  std::vector<int32_t> packed;
  packed.reserve(size_t(4 * T + S + 1 + R) + s.page_indices.size());
  for (const auto* v : {&s.tokens, &s.positions, &s.token_seq, &s.slots, &s.page_indptr,
                        &s.logit_rows, &s.page_indices})
    packed.insert(packed.end(), v->begin(), v->end());
  Tensor inputs = b.alloc({int64_t(std::max<size_t>(packed.size(), 1))}, DType::kI32);
  b.upload_async(inputs, packed.data(), packed.size() * sizeof(int32_t));
  const int32_t* base = inputs.as<int32_t>();
  StepContext ctx{int32_t(T),
                  int32_t(S),
                  base,
                  base + T,
                  base + 2 * T,
                  base + 3 * T,
                  base + 4 * T,
                  base + 4 * T + S + 1 + R,
                  &s};
  ctx.latent_observer = latent_observer_;
  LatentExpansion expansion = plan_latent_expansion(config_, plan_.tp, s, cache_opts_.page_size);
  if (expansion.active()) {
    upload_latent_expansion(b, expansion);
    ctx.expansion = &expansion;
  }
  const int32_t* row_ids = base + 4 * T + S + 1;

  const bool want_logits = plan_.rank == 0 && R > 0;
  const int64_t V = config_.vocab_size;
  Tensor out = want_logits ? b.alloc({R, V}, DType::kF32) : Tensor{};
  run_body(ctx, row_ids, want_logits ? R : 0, want_logits ? as_mat(out, V) : MatView{});
  if (want_logits) consume(as_mat(out, V));
}

// ---- decode graphs ----

namespace {
// Padded batch sizes: fine steps at small batch (latency), coarser above (padding <= 50%).
constexpr int kGraphSizes[] = {1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512};
}  // namespace

void Transformer::enable_decode_graphs(int max_batch) {
  if (max_batch < 0) throw std::invalid_argument("decode graphs: max batch must be >= 0");
  if (max_batch > 0 && !backend_.supports_capture())
    throw std::invalid_argument("decode graphs: backend " + backend_.name() + " cannot record ops");
  graphs_.clear();
  graph_logits_ = Tensor{};
  max_graph_batch_ = max_batch;
}

int Transformer::decode_graph_size(int n) const {
  if (n <= 0 || n > max_graph_batch_) return 0;
  for (int g : kGraphSizes)
    if (g >= n) return std::min(g, max_graph_batch_);
  return 0;
}

bool Transformer::is_pure_decode(const StepBatch& s) const {
  if (s.num_tokens() == 0 || s.num_tokens() != s.num_seqs()) return false;
  if (int64_t(s.logit_rows.size()) != s.num_tokens()) return false;
  for (int32_t t = 0; t < s.num_tokens(); ++t)
    if (s.logit_rows[size_t(t)] != t || s.token_seq[size_t(t)] != t || s.positions[size_t(t)] == 0)
      return false;
  return true;
}

void Transformer::forward_graph(const StepBatch& s, int padded, const LogitsConsumer& consume) {
  Backend& b = backend_;
  const int64_t T = s.num_tokens(), G = padded, V = config_.vocab_size;
  const int32_t scratch_page = int32_t(cache_opts_.num_pages);
  // Fixed layout for every padded size: [tokens G | positions G | token_seq G | slots G |
  // indptr G+1 | row ids G | page indices capacity]. Padded sequence i >= T: token 0 at
  // position 0 in the scratch page.
  const int64_t n_indices = int64_t(s.page_indices.size()) + (G - T);
  if (n_indices > graph_index_capacity_) {
    graphs_.clear();  // recordings point at the old buffer
    // Generous from the start (64 KB): a regrowth drops every recording.
    graph_index_capacity_ = std::max({n_indices, 2 * graph_index_capacity_, int64_t(16384)});
    const int64_t M = max_graph_batch_;
    graph_inputs_ = b.alloc({6 * M + 1 + graph_index_capacity_}, DType::kI32);
  }
  const int64_t M = max_graph_batch_;
  std::vector<int32_t> packed(size_t(6 * M + 1) + size_t(n_indices), 0);
  int32_t* tokens = packed.data();
  int32_t* positions = tokens + M;
  int32_t* token_seq = positions + M;
  int32_t* slots = token_seq + M;
  int32_t* indptr = slots + M;
  int32_t* row_ids = indptr + M + 1;
  int32_t* indices = row_ids + M;
  for (int64_t i = 0; i < G; ++i) {
    const bool real = i < T;
    tokens[i] = real ? s.tokens[size_t(i)] : 0;
    positions[i] = real ? s.positions[size_t(i)] : 0;
    token_seq[i] = int32_t(i);
    slots[i] = real ? s.slots[size_t(i)] : scratch_page * cache_opts_.page_size;
    row_ids[i] = int32_t(i);
  }
  std::copy(s.page_indptr.begin(), s.page_indptr.end(), indptr);
  std::copy(s.page_indices.begin(), s.page_indices.end(), indices);
  for (int64_t i = T; i < G; ++i) {
    indices[indptr[i]] = scratch_page;
    indptr[i + 1] = indptr[i] + 1;
  }
  b.upload_async(graph_inputs_, packed.data(), packed.size() * sizeof(int32_t));

  const int32_t* base = graph_inputs_.as<int32_t>();
  const StepContext ctx{int32_t(G),   int32_t(G),       base, base + M, base + 2 * M, base + 3 * M,
                        base + 4 * M, base + 6 * M + 1, &s};
  const bool want_logits = plan_.rank == 0;
  if (want_logits && graph_logits_.data == nullptr) graph_logits_ = b.alloc({M, V}, DType::kF32);
  MatView out = want_logits ? as_mat(graph_logits_, V) : MatView{};
  out.rows = G;
  const int32_t* row_dev = base + 5 * M + 1;

  auto found = graphs_.find(padded);
  if (found != graphs_.end()) {
    found->second->replay();
  } else {
    // First step at this size: run it eagerly (this also grows every workspace to its final
    // size, so nothing allocates outside the recording later), then record the same ops.
    run_body(ctx, row_dev, want_logits ? G : 0, out);
    b.begin_capture();
    try {
      run_body(ctx, row_dev, want_logits ? G : 0, out);
    } catch (...) {
      try {
        b.end_capture();
      } catch (...) {
      }
      throw;
    }
    graphs_[padded] = b.end_capture();
  }
  if (!want_logits) return;
  out.rows = T;
  consume(out);
}

}  // namespace mlra
