// One row per attention variant (variant_traits.cpp): what the rest of models/ needs to know about
// a variant besides its math, decided once at load. The attention layer, cache layout, TP plan,
// prefill form and the paged-attention kernel family the cache is laid out for are read from the
// row, never re-inferred from dimensions. Adding a variant = one row + its attention math (weight
// loading and projections in kv_attention.cpp or latent_attention.cpp).
#pragma once

#include <span>

#include "kernels/paged_attention.h"
#include "models/variant.h"

namespace mlra {

// Which AttentionLayer implements the variant.
enum class AttentionFamily {
  kKv,      // KvAttention: K/V cache
  kLatent,  // LatentAttention: absorbed latents
};

// The cache row of one token on one rank.
enum class CacheLayout {
  kKvHeads,     // [K of each local KV head | V of each], head_dim each (MFA: one shared KV head)
  kTiedRope,    // GTA: [s|u of each local KV head | shared roped key r of head_dim / 2]
  kLatentRope,  // [each local latent (or TPLA slice) | shared roped k_pe]
};

// The query heads -> KV heads map of the K/V family. TP splits the query heads into contiguous
// blocks; a rank caches the KV heads its query heads read.
enum class KvHeadMap {
  kNone,     // latent family
  kPerHead,  // KV head h for query head h (MHA, TPA)
  kGrouped,  // KV head h / group_size (GQA, MQA, GTA)
  kShared,   // one KV head for every query head, cached on every rank (MFA)
};

// How the attention of prefill chunks is computed.
enum class PrefillForm {
  kAsDecode,  // the decode formula over the cache
  // MLA / GLA: config latent_prefill chooses the absorbed (decode) form or the expanded form
  // (per-head K/V up-projected from the latents, latent_expansion.h) per sequence.
  kAbsorbedOrExpanded,
};

struct VariantTraits {
  AttentionKind kind;
  const char* name;   // canonical base name, e.g. "mlra4"
  bool has_gated;     // the release has a _gated sibling
  bool has_no_scale;  // the release has a _no_scale sibling
  AttentionFamily family;
  CacheLayout cache;
  AttentionKernel kernel;  // the paged-attention family the cache layout is made for
  KvHeadMap kv_heads;
  // Latent family: latents cached per token at TP=1, and the query head groups they serve:
  // latent l is read by group l % latent_head_groups (n_head / latent_head_groups heads each).
  int num_latents;
  int latent_head_groups;
  PrefillForm prefill;
};

const VariantTraits& traits(AttentionKind kind);
std::span<const VariantTraits> all_variant_traits();  // one row per AttentionKind, enum order

}  // namespace mlra
