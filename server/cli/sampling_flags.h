// The sampling command-line flags shared by `client` (sent over gRPC) and `generate` (offline),
// so both spell them the same way. Unset flags stay unset: the server's defaults apply.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "engine/request.h"
#include "proto/mlra.pb.h"

namespace mlra {

struct SamplingFlags {
  std::optional<int32_t> max_tokens;
  std::optional<float> temperature;
  std::optional<int32_t> top_k;
  std::optional<float> top_p;
  std::optional<float> min_p;
  std::optional<float> repetition_penalty;
  std::optional<float> frequency_penalty;
  std::optional<float> presence_penalty;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  int32_t logprobs = 0;
};

// --max-tokens, --temperature, --top-k, --top-p, --min-p, --repetition-penalty,
// --frequency-penalty, --presence-penalty, --seed, --stop (repeatable), --stop-token-id
// (repeatable), --ignore-eos, --logprobs.
void add_sampling_flags(CLI::App& command, SamplingFlags& flags);

v1::SamplingParams to_proto(const SamplingFlags& flags);

}  // namespace mlra
