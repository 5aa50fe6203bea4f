// NCCL all-reduce between GPU ranks (one device per rank, usually one worker process per GPU).
// Rank 0 creates the unique id; the frontend forwards its bytes to the other ranks over the
// control channel; every rank then joins with ncclCommInitRank. Collectives are enqueued on the
// backend's stream, so they are ordered with the model's own kernels. Built only with CUDA
// (MLRA_HAVE_CUDA); this header itself includes no CUDA header.
#pragma once

#include <memory>
#include <stdexcept>
#include <vector>

#include "kernels/backend.h"
#include "kernels/communicator.h"

namespace mlra {

struct NcclError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The opaque bytes of a fresh ncclUniqueId (NCCL_UNIQUE_ID_BYTES = 128). The caller's process
// hosts NCCL's bootstrap root and must stay alive until every rank has joined.
std::vector<char> make_nccl_unique_id();

// Joins the communicator `id` as `rank` of `size` on GPU `device` (made current on the calling
// thread); all_reduce_sum runs on cuda_stream_of(backend) and accepts f32, bf16 and f16 device
// buffers. Blocks until all ranks joined. Throws NcclError.
std::unique_ptr<Communicator> make_nccl_communicator(const std::vector<char>& id, int rank,
                                                     int size, int device, Backend& backend);

}  // namespace mlra
