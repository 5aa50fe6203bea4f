// One call from a checkpoint folder to a validated (config, checkpoint) pair: reads config.json
// for the configured variant, maps the weights, refuses a variant the tensors contradict and any
// missing / extra / mis-shaped tensor, and verifies the shards' checksums. Shows progress on a
// terminal and logs a summary line.
#pragma once

#include <filesystem>
#include <memory>

#include "models/checkpoint.h"
#include "models/checkpoint_integrity.h"
#include "models/model_config.h"

namespace mlra {

struct LoadedModel {
  ModelConfig config;
  std::shared_ptr<Checkpoint> checkpoint;
};

// Throws ConfigError (config.json) or CheckpointError (weights), each naming file and field.
// Verifies every zip member's CRC-32.
LoadedModel load_model(const std::filesystem::path& dir, const Variant& variant);

struct CheckedCheckpoint {
  std::shared_ptr<Checkpoint> checkpoint;
  // The CRC-32 pass, running while the caller loads the weights: wait() before serving. Null only
  // under Integrity::kSkip.
  std::unique_ptr<BackgroundChecksums> checksums;
};

// The serving path's checkpoint for a config already read: opens `dir`, refuses a variant the
// tensors contradict and any tensor whose shape differs from what `config` implies (one line
// naming the tensor and both shapes), and starts verifying the CRC-32 of share `rank` of `ranks`
// of the zip members (the ranks of one server together verify every member once). Values are
// checked finite as the ranks read them (Checkpoint::read_f32). Throws CheckpointError.
// `integrity` kSkip (`mlra-bench load` only, see Integrity in models/checkpoint.h) skips the shape
// validation, the CRC-32 pass and the finiteness check, and nothing else; the serving runners
// always take the default.
CheckedCheckpoint open_checked_checkpoint(const std::filesystem::path& dir,
                                          const ModelConfig& config, int rank = 0, int ranks = 1,
                                          Integrity integrity = Integrity::kVerify);

}  // namespace mlra
