// The variant traits table; see variant_traits.h. Sibling columns follow models/VARIANTS.md 4.11
// (flag F11); latents and head groups follow its table 5.3.
#include "models/variant_traits.h"

#include <stdexcept>

namespace mlra {
namespace {

using AK = AttentionKind;
using AF = AttentionFamily;
using CL = CacheLayout;
using KK = AttentionKernel;
using KH = KvHeadMap;
using PF = PrefillForm;

// kind, name, gated, no_scale, family, cache, kernel, KV heads, latents, head groups, prefill
constexpr VariantTraits kTraits[] = {
    {AK::kMha, "mha", false, false, AF::kKv, CL::kKvHeads, KK::kKv, KH::kPerHead, 0, 0,
     PF::kAsDecode},
    {AK::kGqa, "gqa", true, false, AF::kKv, CL::kKvHeads, KK::kKv, KH::kGrouped, 0, 0,
     PF::kAsDecode},
    {AK::kMqa, "mqa", false, false, AF::kKv, CL::kKvHeads, KK::kKv, KH::kGrouped, 0, 0,
     PF::kAsDecode},
    // K_h = [s | r], V_h = [s | u]: keys narrower than values, no tensor-core kernel.
    {AK::kGta, "gta", false, false, AF::kKv, CL::kTiedRope, KK::kGeneric, KH::kGrouped, 0, 0,
     PF::kAsDecode},
    // Head dim 256 in the release: the K/V kernel's preconditions fail and it runs generic.
    {AK::kMfa, "mfa", false, false, AF::kKv, CL::kKvHeads, KK::kKv, KH::kShared, 0, 0,
     PF::kAsDecode},
    // Caches every head's full K/V (not the factored form).
    {AK::kTpa, "tpa", false, false, AF::kKv, CL::kKvHeads, KK::kKv, KH::kPerHead, 0, 0,
     PF::kAsDecode},
    {AK::kMla, "mla", true, true, AF::kLatent, CL::kLatentRope, KK::kLatent, KH::kNone, 1, 1,
     PF::kAbsorbedOrExpanded},
    {AK::kGla2, "gla2", true, true, AF::kLatent, CL::kLatentRope, KK::kLatent, KH::kNone, 2, 2,
     PF::kAbsorbedOrExpanded},
    {AK::kGla4, "gla4", false, false, AF::kLatent, CL::kLatentRope, KK::kLatent, KH::kNone, 4, 4,
     PF::kAbsorbedOrExpanded},
    // Two branches (latents {0, 1} and {2, 3}) per head half: separate softmaxes, summed.
    {AK::kMlra2, "mlra2", true, true, AF::kLatent, CL::kLatentRope, KK::kLatent, KH::kNone, 4, 2,
     PF::kAsDecode},
    {AK::kMlra4, "mlra4", true, false, AF::kLatent, CL::kLatentRope, KK::kLatent, KH::kNone, 4, 1,
     PF::kAsDecode},
};

constexpr bool rows_in_enum_order() {
  for (size_t i = 0; i < std::size(kTraits); ++i)
    if (size_t(kTraits[i].kind) != i) return false;
  return true;
}
static_assert(rows_in_enum_order(), "one row per AttentionKind, in enum order");
static_assert(std::size(kTraits) == size_t(AttentionKind::kMlra4) + 1, "a row per AttentionKind");

}  // namespace

const VariantTraits& traits(AttentionKind kind) {
  const size_t i = size_t(kind);
  if (i >= std::size(kTraits)) throw std::out_of_range("traits: unknown AttentionKind");
  return kTraits[i];
}

std::span<const VariantTraits> all_variant_traits() {
  return kTraits;
}

}  // namespace mlra
