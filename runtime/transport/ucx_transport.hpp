// The `ucx` transport: ranks in different processes or hosts, over UCX's tag API on host memory
// (InfiniBand, RoCE, TCP or shared memory, as UCX_TLS and UCX_NET_DEVICES choose). Debian's UCX has
// no CUDA support, so GPU data is staged through host memory by the caller.
//
// Each process owns one UCP worker and a progress thread. Every incoming message is received
// whatever its tag (the sender's rank sits in the top 16 bits of the UCX tag) and handed to the
// receive posted for it, or kept until one is; so receives need not know sizes in advance. A lost
// peer fails the receives waiting on it with the reason (with shared-memory-only UCX_TLS, which
// cannot detect it, the control plane does).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "actors/transport.hpp"
#include "support/expected.hpp"

namespace loom::transport {

// Creates this process's UCP context, worker and progress thread for rank `rank` of `world`.
expected<std::shared_ptr<void>> make_ucx_transport(int rank, int world);

// This worker's address, to hand to the other ranks (through the control plane).
std::vector<std::uint8_t> ucx_address(const std::shared_ptr<void>& state);

// Connects to every other rank: addresses[r] is rank r's ucx_address().
expected<void> ucx_connect(const std::shared_ptr<void>& state, const std::vector<std::vector<std::uint8_t>>& addresses);

// The handle actors use (the rank is the one the transport was made for).
actors::transport ucx_handle(const std::shared_ptr<void>& state);

// Stops the progress thread and closes endpoints (also done when the last handle goes).
void ucx_close(const std::shared_ptr<void>& state);

// Calls `hook` with every payload as it arrives (on the progress thread, in each sender's order),
// before it is matched to a receive: for a transport layered on this one (nccl). Set before connect.
void ucx_on_arrival(const std::shared_ptr<void>& state, std::function<void(int from, actors::payload&)> hook);

}  // namespace loom::transport
