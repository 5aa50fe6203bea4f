// Variant names and siblings, read off the traits table (variant_traits.cpp;
// models/VARIANTS.md 4.11).
#include "models/variant.h"

#include <algorithm>
#include <cctype>

#include "models/variant_traits.h"

namespace mlra {
namespace {

// Lowercase, drop '-' and the '_' that separates a digit ("mlra_4" -> "mlra4").
std::string normalise(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = static_cast<char>(std::tolower(static_cast<unsigned char>(s[i])));
    if (c == '-') continue;
    if (c == '_' && i + 1 < s.size() && std::isdigit(static_cast<unsigned char>(s[i + 1])))
      continue;
    out += c;
  }
  return out;
}

bool strip_suffix(std::string& s, std::string_view suffix) {
  if (s.size() < suffix.size() || s.compare(s.size() - suffix.size(), suffix.size(), suffix) != 0)
    return false;
  s.resize(s.size() - suffix.size());
  return true;
}

}  // namespace

bool Variant::is_latent() const {
  return traits(kind).family == AttentionFamily::kLatent;
}

std::string kind_name(AttentionKind kind) {
  return traits(kind).name;
}

std::string Variant::name() const {
  std::string n = kind_name(kind);
  if (gated) n += "_gated";
  if (no_scale) n += "_no_scale";
  return n;
}

std::optional<Variant> parse_variant(std::string_view name) {
  std::string s = normalise(name);
  Variant v;
  v.no_scale = strip_suffix(s, "_noscale") || strip_suffix(s, "_no_scale");
  v.gated = strip_suffix(s, "_gated");
  for (const VariantTraits& k : all_variant_traits()) {
    if (s != k.name) continue;
    if (v.gated && !k.has_gated) return std::nullopt;
    if (v.no_scale && !k.has_no_scale) return std::nullopt;
    if (v.gated && v.no_scale) return std::nullopt;
    v.kind = k.kind;
    return v;
  }
  return std::nullopt;
}

std::vector<Variant> all_variants() {
  std::vector<Variant> out;
  for (const VariantTraits& k : all_variant_traits()) {
    out.push_back({k.kind, false, false});
    if (k.has_gated) out.push_back({k.kind, true, false});
    if (k.has_no_scale) out.push_back({k.kind, false, true});
  }
  return out;
}

}  // namespace mlra
