// Which sequences of a step attend in the expanded form (LatentPrefill, model_config.h), and the
// step's scratch cache for them. Expanded sequences are a suffix of the step's sequences (the
// scheduler puts decodes first and prefill chunks after them), so the absorbed rest is a prefix of
// the step: its positions, sequence ids and page tables are the step's own arrays, cut short.
// The scratch cache holds, for each expanded sequence, every position 0 .. its last token's
// position (the cached context and this step's tokens alike), each head's K_nope and V
// up-projected from the gathered latents, and the shared k_pe. Built once per step on the host and
// uploaded in one copy; every latent layer of the step reads it.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/backend.h"
#include "models/model_config.h"
#include "models/step_batch.h"

namespace mlra {

struct LatentExpansion {
  static constexpr int32_t kScratchPage = 64;  // page size of the scratch cache

  int32_t first_seq = 0;     // sequences [first_seq, S) are expanded
  int32_t first_token = 0;   // their tokens: [first_token, T)
  int32_t num_tokens = 0;    // T - first_token
  int32_t num_seqs = 0;      // S - first_seq
  int32_t scratch_rows = 0;  // positions of the scratch cache (whole pages)

  // Device arrays (after upload): the expanded tokens' sequence ids renumbered from 0 [E], the
  // scratch page table (CSR: [num_seqs + 1], pages in order) and, per scratch row, the slot of
  // the step's real cache it is gathered from [scratch_rows] (padding rows repeat a valid slot).
  const int32_t* token_seq = nullptr;
  const int32_t* page_indptr = nullptr;
  const int32_t* page_indices = nullptr;
  const int32_t* gather_slots = nullptr;

  bool active() const { return num_tokens > 0; }

  std::vector<int32_t> host;  // [token_seq | page_indptr | page_indices | gather_slots]
  Tensor device;
};

// Whether this model's latent layers can attend in the expanded form: MLA (not TPLA) and GLA,
// where every query head reads one latent. MLRA heads sum several latents' branches, and their
// d_c = d_n leaves nothing to save.
bool latent_expansion_supported(const ModelConfig& config);

// Scratch bytes per position for one rank of `tp`: gathered latents plus K_nope, V and k_pe.
int64_t latent_expansion_row_bytes(const ModelConfig& config, int tp);

// The expanded suffix of step s (inactive when none): with kAuto, the longest suffix of
// sequences that each bring several tokens and save more attention FLOPs than their
// up-projection costs; with kExpanded, the longest suffix of sequences with several tokens.
// Both stop where the scratch would pass config.latent_prefill.scratch_bytes.
LatentExpansion plan_latent_expansion(const ModelConfig& config, int tp, const StepBatch& s,
                                      int32_t page_size);

// Copies the plan's arrays to the backend and points the device fields at them.
void upload_latent_expansion(Backend& backend, LatentExpansion& plan);

}  // namespace mlra
