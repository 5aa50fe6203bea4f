// In-process communicator: TP ranks as threads of one process sharing memory. Used by the CPU
// in-process TP runner and by tests of the sharding math; sums in rank order so every rank gets
// bit-identical results.
#pragma once

#include <memory>
#include <vector>

#include "kernels/communicator.h"

namespace mlra {

// Creates `size` communicators (one per rank) that reduce with each other.
std::vector<std::unique_ptr<Communicator>> make_thread_communicators(int size);

}  // namespace mlra
