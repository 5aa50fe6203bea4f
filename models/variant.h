// The attention variants of the MLRA release and their siblings (models/VARIANTS.md sections 2 and
// 4). config.json never names the variant, so our server config does ("mlra4", "mla_gated", ...),
// and the checkpoint loader cross-checks it against tensor names and shapes.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mlra {

enum class AttentionKind { kMha, kGqa, kMqa, kGta, kMfa, kTpa, kMla, kGla2, kGla4, kMlra2, kMlra4 };

struct Variant {
  AttentionKind kind = AttentionKind::kMlra4;
  bool gated = false;     // sigmoid gate on head outputs before c_proj
  bool no_scale = false;  // q_scale/kv_scale (and MLRA-2's branch scale) removed

  bool is_latent() const;    // latent family (variant_traits.h): MLA, GLA-2/4, MLRA-2/4
  std::string name() const;  // canonical name, e.g. "mlra2_gated"
  bool operator==(const Variant&) const = default;
};

// Parses "mlra4", "mlra-4", "mlra_4", "MLRA-4_gated", "mla_no_scale", ... Returns nullopt when
// the name is unknown or the sibling does not exist in the release (e.g. "mha_gated").
std::optional<Variant> parse_variant(std::string_view name);
std::string kind_name(AttentionKind kind);
std::vector<Variant> all_variants();  // every base variant and existing sibling

}  // namespace mlra
