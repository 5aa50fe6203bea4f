// The in-process ModelRunner: TP ranks as threads of this process (one Rank each, engine/rank.h),
// run in lockstep; rank 0's logits are sampled with the sampling op of rank 0's backend. One rank
// runs on the CPU or one CUDA device; several ranks reduce through shared memory, so in-process
// TP > 1 takes the CPU backend (the multi-process runner spreads ranks over GPUs).
#pragma once

#include <memory>

#include "engine/model_runner.h"
#include "engine/runner_config.h"

namespace mlra {

std::unique_ptr<ModelRunner> make_local_runner(const RunnerConfig& config);

}  // namespace mlra
