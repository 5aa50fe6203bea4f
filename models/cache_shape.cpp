// Rank -> owned query heads / latents -> cached values. Head-split variants own the contiguous
// head block [rank*H/tp, (rank+1)*H/tp) and cache whatever KV heads or latents those heads read.
// MLRA instead assigns latents to ranks (GPU r <-> latent r at TP 4; 4/tp latents below, each
// latent's heads split over tp/4 ranks above), which is what lets it reach 1.5 d_h per GPU.
#include "models/cache_shape.h"

#include <algorithm>
#include <set>

namespace mlra {
namespace {

[[noreturn]] void refuse(const ModelConfig& c, int tp, const std::string& why) {
  throw ConfigError(c.variant.name() + " cannot run at TP " + std::to_string(tp) + ": " + why);
}

// Distinct values of `owner(h)` over the heads of a rank.
template <class F>
int64_t distinct_over_heads(const ModelConfig& c, int tp, int rank, F owner) {
  const int64_t per = c.n_head / tp;
  std::set<int64_t> s;
  for (int64_t h = rank * per; h < (rank + 1) * per; ++h) s.insert(owner(h));
  return static_cast<int64_t>(s.size());
}

int64_t mlra_latents(const ModelConfig& c, int tp) {
  constexpr int kLatents = 4;  // hard-coded in the reference (flag F10)
  if (tp <= kLatents) {
    if (kLatents % tp)
      refuse(c, tp, "its 4 latent heads do not split evenly over " + std::to_string(tp) + " ranks");
    return kLatents / tp;
  }
  if (tp % kLatents) refuse(c, tp, "above TP 4 the degree must be a multiple of the 4 latents");
  const int64_t unit_heads = c.variant.kind == AttentionKind::kMlra4 ? c.n_head : c.n_head / 2;
  const int split = tp / kLatents;
  if (unit_heads % split)
    refuse(c, tp,
           "each latent's " + std::to_string(unit_heads) + " query heads do not split over " +
               std::to_string(split) + " ranks");
  return 1;
}

}  // namespace

int64_t cache_values_on_rank(const ModelConfig& c, int tp, int rank) {
  if (tp < 1) throw ConfigError("TP degree must be at least 1, got " + std::to_string(tp));
  if (rank < 0 || rank >= tp)
    throw ConfigError("rank " + std::to_string(rank) + " outside TP " + std::to_string(tp));
  const AttentionKind k = c.variant.kind;
  const bool mlra = k == AttentionKind::kMlra2 || k == AttentionKind::kMlra4;
  if (!mlra && c.n_head % tp)
    refuse(c, tp,
           "n_head " + std::to_string(c.n_head) + " is not divisible by " + std::to_string(tp));
  const int64_t hd = c.head_dim, per = c.n_head / tp;
  switch (k) {
    case AttentionKind::kMha:
      return 2 * hd * per;
    case AttentionKind::kGqa:
    case AttentionKind::kMqa:
      return 2 * hd * distinct_over_heads(c, tp, rank, [&](int64_t h) { return h / c.group_size; });
    case AttentionKind::kGta:
      return hd * distinct_over_heads(c, tp, rank, [&](int64_t h) { return h / c.group_size; }) +
             hd / 2;
    case AttentionKind::kMfa:
      return 2 * hd;  // one shared K and V head, replicated
    case AttentionKind::kTpa:
      return 2 * c.rank * per + 2 * c.rank * hd;  // A_k/A_v local, B replicated
    case AttentionKind::kMla:
      return c.kv_lora_rank + c.qk_rope_head_dim;  // latent replicated
    case AttentionKind::kGla2:
    case AttentionKind::kGla4: {
      const int64_t heads_per_latent = c.n_head / c.num_latents();
      return c.latent_dim() *
                 distinct_over_heads(c, tp, rank, [&](int64_t h) { return h / heads_per_latent; }) +
             c.qk_rope_head_dim;
    }
    case AttentionKind::kMlra2:
    case AttentionKind::kMlra4:
      return c.latent_dim() * mlra_latents(c, tp) + c.qk_rope_head_dim;
  }
  return 0;
}

CacheWidth cache_values_per_rank(const ModelConfig& c, int tp) {
  if (tp < 1 || tp > 1024)
    throw ConfigError("TP degree must be in 1..1024, got " + std::to_string(tp));
  CacheWidth w{INT64_MAX, 0};
  for (int r = 0; r < tp; ++r) {
    const int64_t v = cache_values_on_rank(c, tp, r);
    w.min_values = std::min(w.min_values, v);
    w.max_values = std::max(w.max_values, v);
  }
  return w;
}

std::optional<std::string> tp_refusal(const ModelConfig& c, int tp) {
  try {
    cache_values_per_rank(c, tp);
    return std::nullopt;
  } catch (const ConfigError& e) {
    return std::string(e.what());
  }
}

}  // namespace mlra
