// Missing / mis-shaped / unexpected tensor detection against tensor_layout's expected list.
#include "models/checkpoint_validator.h"

#include <set>

#include "models/tensor_layout.h"
#include "models/variant_inference.h"

namespace mlra {

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
                            shape_string(ckpt.info(name).shape) + " is not part of " + v);
}

}  // namespace mlra
