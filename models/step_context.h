// Per-step metadata as the backend sees it (device pointers on CUDA), shared by every layer of
// one forward: token ids, absolute positions, sequence of each token, cache slots and the CSR
// page tables. Built once per step from a StepBatch.
#pragma once

#include <cstdint>

#include "kernels/backend.h"
#include "models/latent_observer.h"
#include "models/step_batch.h"

namespace mlra {

struct LatentExpansion;

struct StepContext {
  int32_t num_tokens = 0;
  int32_t num_seqs = 0;
  const int32_t* tokens = nullptr;             // [T]
  const int32_t* positions = nullptr;          // [T]
  const int32_t* token_seq = nullptr;          // [T]
  const int32_t* slots = nullptr;              // [T]
  const int32_t* page_indptr = nullptr;        // [S+1]
  const int32_t* page_indices = nullptr;       // [page_indptr[S]]
  const StepBatch* host = nullptr;             // the same step on the host
  LatentObserver* latent_observer = nullptr;   // calibration tap on latent cache rows (eager only)
  const LatentExpansion* expansion = nullptr;  // MLA / GLA prefill chunks in the expanded form
};

// Fills the page-table and per-token fields of attention arguments from a step.
inline void bind_step(PagedAttentionArgs& a, const StepContext& s) {
  a.num_tokens = s.num_tokens;
  a.token_seq = s.token_seq;
  a.token_pos = s.positions;
  a.page_indptr = s.page_indptr;
  a.page_indices = s.page_indices;
  a.num_seqs = s.num_seqs;
}

}  // namespace mlra
