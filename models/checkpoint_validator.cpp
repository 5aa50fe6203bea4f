// Missing / mis-shaped / unexpected tensor detection against tensor_layout's expected list.
#include "models/checkpoint_validator.h"

#include <cctype>
#include <set>

#include "models/tensor_layout.h"
#include "models/variant_inference.h"

namespace mlra {
namespace {

// " (layer L: config.json has n_layer N)" for a tensor of a layer the config does not have.
std::string past_last_layer(const std::string& name, int64_t n_layer) {
  const std::string prefix = "transformer.h.";
  if (name.rfind(prefix, 0) != 0) return "";
  int64_t layer = 0;
  size_t i = prefix.size();
  if (i >= name.size() || !std::isdigit(static_cast<unsigned char>(name[i]))) return "";
  for (; i < name.size() && std::isdigit(static_cast<unsigned char>(name[i])) && layer < 1000000;
       ++i)
    layer = layer * 10 + (name[i] - '0');
  if (layer < n_layer) return "";
  return " (layer " + std::to_string(layer) + ": config.json has n_layer " +
         std::to_string(n_layer) + ")";
}

}  // namespace

void validate_checkpoint(const Checkpoint& ckpt, const ModelConfig& config) {
  const std::string v = config.variant.name();
  const auto expected = expected_tensors(config);
  std::set<std::string> known;
  std::vector<std::string> missing;
  for (const auto& spec : expected) {
    known.insert(spec.name);
    if (!ckpt.has(spec.name)) {
      const bool tied_alias = spec.name == "lm_head.weight" && ckpt.has("transformer.wte.weight");
      if (!tied_alias) missing.push_back(spec.name + " " + shape_string(spec.shape));
      continue;
    }
    const TensorInfo& t = ckpt.info(spec.name);
    if (t.shape != spec.shape)
      throw CheckpointError(t.file + ": tensor '" + spec.name + "' has shape " +
                            shape_string(t.shape) + ", " + v + " expects " +
                            shape_string(spec.shape));
  }
  if (!missing.empty())
    throw CheckpointError(
        ckpt.dir().string() + ": missing tensor " + missing.front() + " of " + v +
        (missing.size() > 1 ? " (and " + std::to_string(missing.size() - 1) + " more)" : ""));
  for (const auto& name : ckpt.names())
    if (!known.count(name))
      throw CheckpointError(ckpt.info(name).file + ": unexpected tensor '" + name + "' " +
                            shape_string(ckpt.info(name).shape) + " is not part of " + v +
                            past_last_layer(name, config.n_layer));
}

}  // namespace mlra
