// Variant names and which gated / no_scale siblings exist (models/VARIANTS.md 4.11, flag F11).
#include "models/variant.h"

#include <algorithm>
#include <cctype>

namespace mlra {
namespace {

struct KindName {
  AttentionKind kind;
  const char* name;
  bool has_gated;
  bool has_no_scale;
};

constexpr KindName kKinds[] = {
    {AttentionKind::kMha, "mha", false, false},   {AttentionKind::kGqa, "gqa", true, false},
    {AttentionKind::kMqa, "mqa", false, false},   {AttentionKind::kGta, "gta", false, false},
    {AttentionKind::kMfa, "mfa", false, false},   {AttentionKind::kTpa, "tpa", false, false},
    {AttentionKind::kMla, "mla", true, true},     {AttentionKind::kGla2, "gla2", true, true},
    {AttentionKind::kGla4, "gla4", false, false}, {AttentionKind::kMlra2, "mlra2", true, true},
    {AttentionKind::kMlra4, "mlra4", true, false},
};

const KindName& entry(AttentionKind kind) {
  for (const auto& k : kKinds)
    if (k.kind == kind) return k;
  return kKinds[0];
}

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
  return kind == AttentionKind::kMla || kind == AttentionKind::kGla2 ||
         kind == AttentionKind::kGla4 || kind == AttentionKind::kMlra2 ||
         kind == AttentionKind::kMlra4;
}

std::string kind_name(AttentionKind kind) { return entry(kind).name; }

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
  for (const auto& k : kKinds) {
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
  for (const auto& k : kKinds) {
    out.push_back({k.kind, false, false});
    if (k.has_gated) out.push_back({k.kind, true, false});
    if (k.has_no_scale) out.push_back({k.kind, false, true});
  }
  return out;
}

}  // namespace mlra
