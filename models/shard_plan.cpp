// Sharding plans for every variant family; see shard_plan.h for the unit-dealing rule.
#include "models/shard_plan.h"

#include <algorithm>
#include <set>
#include <stdexcept>

#include "models/variant_traits.h"

namespace mlra {
namespace {

int index_of(const std::vector<int>& v, int x) {
  auto it = std::lower_bound(v.begin(), v.end(), x);
  return (it != v.end() && *it == x) ? int(it - v.begin()) : -1;
}

int tpla_slices(const ModelConfig& c, int tp) {
  return c.tpla_options.slices > 0 ? c.tpla_options.slices : tp;
}

std::vector<LatentUnit> deal_units(const ModelConfig& c, int tp, int rank) {
  const std::vector<LatentUnit> all = latent_units(c, tp);
  const int n = int(all.size());
  std::vector<LatentUnit> mine;
  if (tp <= n) {
    const int per = n / tp;
    for (int i = rank * per; i < (rank + 1) * per; ++i) mine.push_back(all[i]);
  } else {
    const int split = tp / n;
    LatentUnit u = all[rank / split];
    const int block = u.num_heads() / split, part = rank % split;
    u.head_begin += part * block;
    u.head_end = u.head_begin + block;
    mine.push_back(u);
  }
  return mine;
}

void plan_latent(const ModelConfig& c, ShardPlan& p) {
  p.units = deal_units(c, p.tp, p.rank);
  p.latent_width = c.tpla() ? c.latent_dim() / tpla_slices(c, p.tp) : c.latent_dim();
  std::set<int> heads, latents;
  for (const auto& u : p.units) {
    latents.insert(u.latent);
    for (int h = u.head_begin; h < u.head_end; ++h) heads.insert(h);
  }
  p.heads.assign(heads.begin(), heads.end());
  p.latents.assign(latents.begin(), latents.end());
  p.cache_width = int64_t(p.latents.size()) * p.latent_width + c.qk_rope_head_dim;
}

void plan_heads(const ModelConfig& c, ShardPlan& p) {
  const int per = int(c.n_head) / p.tp;
  for (int h = p.rank * per; h < (p.rank + 1) * per; ++h) p.heads.push_back(h);
  std::set<int> kv;
  for (int h : p.heads) kv.insert(kv_head_of(c, h));
  p.kv_heads.assign(kv.begin(), kv.end());
  const int64_t hd = c.head_dim, n_kv = int64_t(p.kv_heads.size());
  switch (traits(c.variant.kind).cache) {
    case CacheLayout::kKvHeads:
      p.cache_width = 2 * hd * n_kv;
      break;
    case CacheLayout::kTiedRope:
      p.cache_width = hd * n_kv + hd / 2;
      break;
    case CacheLayout::kLatentRope:
      throw std::logic_error("plan_heads: a latent cache has no KV heads");
  }
}

}  // namespace

int ShardPlan::local_head(int h) const {
  return index_of(heads, h);
}
int ShardPlan::local_latent(int l) const {
  return index_of(latents, l);
}
int ShardPlan::local_kv_head(int k) const {
  return index_of(kv_heads, k);
}

int kv_head_of(const ModelConfig& c, int query_head) {
  switch (traits(c.variant.kind).kv_heads) {
    case KvHeadMap::kPerHead:
      return query_head;
    case KvHeadMap::kGrouped:
      return query_head / int(c.group_size);
    case KvHeadMap::kShared:
      return 0;
    case KvHeadMap::kNone:
      break;
  }
  throw std::logic_error("kv_head_of: " + c.variant.name() + " has no KV heads");
}

std::vector<LatentUnit> latent_units(const ModelConfig& c, int tp) {
  const int h = int(c.n_head);
  if (c.tpla()) {
    std::vector<LatentUnit> slices;
    for (int r = 0; r < tpla_slices(c, tp); ++r) slices.push_back({r, 0, h});
    return slices;
  }
  // Latent l serves head group l % groups. Units are ordered by head group, so TP = groups gives
  // each rank one group with all of its latents (MLRA-2 TP2: one head half with both branches, a
  // pure head split).
  const VariantTraits& t = traits(c.variant.kind);
  const int groups = t.latent_head_groups;
  std::vector<LatentUnit> units;
  for (int g = 0; g < groups; ++g)
    for (int l = g; l < t.num_latents; l += groups)
      units.push_back({l, h / groups * g, g + 1 == groups ? h : h / groups * (g + 1)});
  return units;
}

std::string unsupported_tp_reason(const ModelConfig& c, int tp) {
  if (tp < 1) return "TP degree must be at least 1";
  if (auto why = attention_tp_reason(c, tp); !why.empty()) return why;
  if (c.intermediate_size % tp != 0)
    return "intermediate_size " + std::to_string(c.intermediate_size) + " is not divisible by tp " +
           std::to_string(tp);
  return "";
}

std::string attention_tp_reason(const ModelConfig& c, int tp) {
  if (tp < 1) return "TP degree must be at least 1";
  const std::string v = c.variant.name();
  if (c.tpla() && c.latent_dim() % tpla_slices(c, tp) != 0)
    return "tpla: latent width " + std::to_string(c.latent_dim()) + " not divisible into " +
           std::to_string(tpla_slices(c, tp)) + " slices";
  if (c.variant.is_latent()) {
    const auto units = latent_units(c, tp);
    const int n = int(units.size());
    if (tp <= n) {
      if (n % tp != 0)
        return v + " has " + std::to_string(n) + " latent units, not divisible by tp " +
               std::to_string(tp);
    } else {
      if (tp % n != 0)
        return "tp " + std::to_string(tp) + " is not a multiple of the " + std::to_string(n) +
               " latent units of " + v;
      for (const auto& u : units)
        if (u.num_heads() % (tp / n) != 0)
          return v + ": " + std::to_string(u.num_heads()) + " heads per latent cannot be split " +
                 std::to_string(tp / n) + " ways";
    }
    return "";
  }
  if (c.n_head % tp != 0)
    return v + ": n_head " + std::to_string(c.n_head) + " is not divisible by tp " +
           std::to_string(tp);
  return "";
}

ShardPlan make_shard_plan(const ModelConfig& c, int tp, int rank) {
  if (auto why = unsupported_tp_reason(c, tp); !why.empty()) throw ShardError(why);
  if (rank < 0 || rank >= tp) throw ShardError("rank " + std::to_string(rank) + " outside tp");
  ShardPlan p;
  p.tp = tp;
  p.rank = rank;
  p.ff_begin = c.intermediate_size / tp * rank;
  p.ff_end = p.ff_begin + c.intermediate_size / tp;
  if (c.variant.is_latent())
    plan_latent(c, p);
  else
    plan_heads(c, p);
  return p;
}

}  // namespace mlra
