// The `nccl` transport: ranks in different processes, each with its own GPU, with GPU rows moving device
// to device through NCCL and everything else (headers, gradient sums, control) over the `ucx` transport
// it is layered on.
//
// Between every two processes there are two channels, one per direction, each a two-rank NCCL
// communicator with its own stream. A send of GPU rows (payload::wire) enqueues ncclSend on the channel
// to the peer, after the rows' event, and then sends a small header over UCX with the same tag; the
// receiver's UCX progress thread sees headers in the sender's order and enqueues the matching ncclRecv
// into fresh stream-ordered memory, so both sides issue a channel's operations in the same order. The
// received payload carries the memory and the event after which it holds the rows; no host waits.
//
// One GPU per process: NCCL refuses two ranks of one communicator on one GPU (use `ucx` there).
// Status: opt-in (LOOM_DATA_PLANE=nccl). Its first run on two H200s did not finish; this version sends
// the header before the transfer and creates the channels one pair at a time, and has not run since.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "actors/transport.hpp"
#include "support/expected.hpp"

namespace loom::transport {

// Whether this build has NCCL (otherwise make_nccl_transport says so).
bool nccl_available();

// This process's UCX transport and NCCL channel ids, for rank `rank` of `world` on GPU `device`.
expected<std::shared_ptr<void>> make_nccl_transport(int rank, int world, int device);

// The handle actors use; address() and connect() exchange the UCX addresses and NCCL ids through the
// control plane, and connect() creates every channel (all ranks call it together).
actors::transport nccl_handle(const std::shared_ptr<void>& state);

// Stops the UCX progress thread under it and closes its endpoints; the channels go with the last handle.
void nccl_close(const std::shared_ptr<void>& state);

}  // namespace loom::transport
