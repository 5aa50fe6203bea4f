// TPLA calibration: the model runs as plain MLA (TP1, CPU) with a LatentMoments observer on
// its steps; every window is one prefill from position 0, like a perplexity window, without
// logits (nothing needs them).
#include "models/latent_calibration.h"

#include <cblas.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "kernels/backend.h"
#include "kernels/communicator.h"
#include "models/checkpoint.h"
#include "models/model_config.h"
#include "models/shard_plan.h"
#include "models/tpla.h"
#include "models/transformer.h"
#include "models/variant_inference.h"

namespace mlra {

LatentMoments::LatentMoments(int64_t n_layer, int64_t width)
    : width_(width),
      sum_(size_t(n_layer), std::vector<double>(size_t(width * width), 0.0)),
      count_(size_t(n_layer), 0) {
  if (n_layer <= 0 || width <= 0) throw std::invalid_argument("latent moments: empty shape");
}

void LatentMoments::observe(int64_t layer, const float* rows, int64_t tokens, int64_t width) {
  if (layer < 0 || layer >= layers() || width != width_)
    throw std::invalid_argument("latent moments: layer " + std::to_string(layer) + " of width " +
                                std::to_string(width) + " does not fit " +
                                std::to_string(layers()) + " x " + std::to_string(width_));
  if (tokens <= 0) return;
  // Double before the products: the sums run over ~1e5 vectors and feed an eigensolver.
  scratch_.assign(rows, rows + tokens * width);
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, int(width), int(tokens), 1.0, scratch_.data(),
              int(width), 1.0, sum_[size_t(layer)].data(), int(width));
  count_[size_t(layer)] += tokens;
}

std::vector<double> LatentMoments::second_moment(int64_t layer) const {
  const int64_t n = width_, count = count_.at(size_t(layer));
  if (count == 0)
    throw std::logic_error("latent moments: layer " + std::to_string(layer) + " saw no token");
  const std::vector<double>& s = sum_[size_t(layer)];
  std::vector<double> m(size_t(n * n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i; j < n; ++j)
      m[size_t(i * n + j)] = m[size_t(j * n + i)] = s[size_t(i * n + j)] / double(count);
  return m;
}

LatentMoments collect_latent_moments(const std::filesystem::path& model_dir, const Variant& variant,
                                     const std::vector<int32_t>& tokens,
                                     const CalibrationOptions& o) {
  if (variant.kind != AttentionKind::kMla)
    throw std::invalid_argument("tpla calibration needs an MLA checkpoint, not " + variant.name());
  ModelConfig config = load_model_config(model_dir / "config.json", variant);
  config.mla_tp_mode = LatentTpMode::kReplicate;  // the untransformed latent c
  LatentMoments moments(config.n_layer, config.latent_dim());
  observe_calibration_run(model_dir, config, tokens, o, moments);
  return moments;
}

void observe_calibration_run(const std::filesystem::path& model_dir, const ModelConfig& config,
                             const std::vector<int32_t>& tokens, const CalibrationOptions& o,
                             LatentObserver& observer) {
  if (!config.variant.is_latent())
    throw std::invalid_argument("latent calibration needs a latent-family model, not " +
                                config.variant.name());
  if (o.window < 1) throw std::invalid_argument("calibration window must be >= 1 token");
  if (o.max_tokens < 1) throw std::invalid_argument("calibration token budget must be >= 1");
  const int64_t n_tokens = std::min<int64_t>(int64_t(tokens.size()), o.max_tokens);
  if (n_tokens == 0) throw std::invalid_argument("no calibration tokens");
  if (config.block_size > 0 && o.window > config.block_size)
    throw std::invalid_argument("calibration window " + std::to_string(o.window) +
                                " exceeds the model's block_size " +
                                std::to_string(config.block_size));
  for (int64_t i = 0; i < n_tokens; ++i)
    if (tokens[size_t(i)] < 0 || tokens[size_t(i)] >= config.vocab_size)
      throw std::invalid_argument(
          "calibration token " + std::to_string(tokens[size_t(i)]) + " at " + std::to_string(i) +
          " is outside the model's vocabulary of " + std::to_string(config.vocab_size));
  const auto ckpt = Checkpoint::open(model_dir);
  check_variant(*ckpt, config);
  const ShardPlan plan = make_shard_plan(config, 1, 0);
  auto backend = make_cpu_backend();
  auto comm = make_single_rank_communicator();
  constexpr int32_t kPage = 64;
  const int32_t pages = (o.window + kPage - 1) / kPage;
  Transformer model(config, plan, *ckpt, *backend, *comm, CacheOptions{kPage, pages});
  model.set_latent_observer(&observer);
  std::vector<float> no_logits;
  for (int64_t s = 0; s < n_tokens; s += o.window) {
    const int32_t len = int32_t(std::min<int64_t>(o.window, n_tokens - s));
    StepBatch step;
    step.page_indptr = {0, (len + kPage - 1) / kPage};
    for (int32_t p = 0; p < step.page_indptr[1]; ++p) step.page_indices.push_back(p);
    for (int32_t t = 0; t < len; ++t) {
      step.tokens.push_back(tokens[size_t(s + t)]);
      step.positions.push_back(t);
      step.token_seq.push_back(0);
      step.slots.push_back(t);
    }
    model.forward(step, no_logits);
  }
}

std::vector<float> slice_ordered_pca(const std::vector<double>& second_moment, int64_t n,
                                     SliceOrder order, int slices) {
  if (slices < 1 || n % slices != 0)
    throw std::invalid_argument("pca: " + std::to_string(n) + " latent values do not split into " +
                                std::to_string(slices) + " slices");
  const std::vector<float> by_eigenvalue = pca_transform(second_moment, n);  // columns descending
  if (order == SliceOrder::kDescending) return by_eigenvalue;
  // Column r*w + j of the result is component j*slices + r: slice r gets components r,
  // r + slices, r + 2*slices, ... so each slice's partial score carries a similar share.
  const int64_t w = n / slices;
  std::vector<float> u(size_t(n * n));
  for (int64_t r = 0; r < slices; ++r)
    for (int64_t j = 0; j < w; ++j)
      for (int64_t i = 0; i < n; ++i)
        u[size_t(i * n + r * w + j)] = by_eigenvalue[size_t(i * n + j * slices + r)];
  return u;
}

}  // namespace mlra
