// Launching the cooperative persistent decode kernels (mlp_block.cu, attn_block.cu): every block
// of the grid resident (cooperative launch), with the PDL attribute where the runtime takes both,
// so the kernel's first weight loads overlap the previous kernel's tail. Whether the runtime takes
// them, eagerly and while a graph records, is asked once per kernel object, at construction.
#pragma once

#include <cuda_runtime.h>

namespace mlra::cuda {

// A cooperative launch of grid x block with `smem` dynamic bytes on `stream`, plus the PDL
// attribute when `pdl`; attr is the storage cfg.attrs points into.
cudaLaunchConfig_t cooperative_launch_config(dim3 grid, dim3 block, size_t smem,
                                             cudaStream_t stream, cudaLaunchAttribute (&attr)[2],
                                             bool pdl);

// Whether a cooperative launch (with the PDL attribute when `pdl`) behind a PDL launch runs, on
// a stream of its own and, with `capture`, recorded in a graph and replayed (where the PDL edge
// becomes a programmatic graph edge). Errors met here are not sticky: they are cleared, and the
// answer is false.
bool cooperative_launch_works(bool pdl, bool capture);

}  // namespace mlra::cuda
