// load_model: config.json -> Checkpoint::open (progress on a tty) -> check_variant -> validate
// -> CRC-32. open_checked_checkpoint: the same checks for a config the runner already read, the
// CRC-32 pass running in the background while the runner loads the weights.
// The variant check runs before shape validation so a wrong --attention gets the message that
// says what the checkpoint holds instead of a list of missing tensors.
#include "models/model_loader.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>

#include <spdlog/spdlog.h>

#include "models/checkpoint_integrity.h"
#include "models/checkpoint_validator.h"
#include "models/variant_inference.h"

namespace mlra {

LoadedModel load_model(const std::filesystem::path& dir, const Variant& variant) {
  const auto t0 = std::chrono::steady_clock::now();
  LoadedModel m;
  m.config = load_model_config(dir / "config.json", variant);
  LoadProgress progress;
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  if (tty)
    progress = [&](uint64_t done, uint64_t total, size_t tensors) {
      std::fprintf(stderr, "\rloading %s: %.2f / %.2f GB, %zu tensors", dir.c_str(), done / 1e9,
                   total / 1e9, tensors);
      std::fflush(stderr);
    };
  m.checkpoint = Checkpoint::open(dir, progress);
  if (tty) std::fputc('\n', stderr);
  check_variant(*m.checkpoint, m.config);
  validate_checkpoint(*m.checkpoint, m.config);
  verify_checkpoint_checksums(*m.checkpoint);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  spdlog::info(
      "loaded {} ({}, {} files, {} tensors, {:.2f} GB mapped) as {}: {} parameters, {:.0f} ms",
      dir.string(), m.checkpoint->format(), m.checkpoint->files().size(),
      m.checkpoint->names().size(), m.checkpoint->total_bytes() / 1e9, variant.name(),
      m.config.param_count(), ms);
  return m;
}

CheckedCheckpoint open_checked_checkpoint(const std::filesystem::path& dir,
                                          const ModelConfig& config, int rank, int ranks,
                                          Integrity integrity) {
  CheckedCheckpoint c;
  c.checkpoint = Checkpoint::open(dir, {}, integrity);
  check_variant(*c.checkpoint, config);
  if (integrity == Integrity::kSkip) return c;
  validate_checkpoint(*c.checkpoint, config);
  c.checksums = std::make_unique<BackgroundChecksums>(c.checkpoint, rank, ranks);
  return c;
}

}  // namespace mlra
