// The `ucx` transport: ranks in different processes or hosts, over UCX's tag API on host memory
// (InfiniBand, RoCE, TCP or shared memory, as UCX_TLS and UCX_NET_DEVICES choose). Debian's UCX has
// no CUDA support, so GPU data is staged through host memory by the caller.
//
// Each process owns one UCP worker and a progress thread. A send goes out on the calling thread (the
// worker is shared under a lock that senders get ahead of the progress thread), as one UCX message
// sent from the payload's own vector where it has one vector, else packed, or a lead and bodies
// (ucx_wire.hpp). The progress thread receives every incoming message whatever its tag, into a vector
// sized by probing, and hands complete payloads, in each sender's order, to the receive posted for
// them or keeps them until one is (ucx_matching.hpp); so receives need not know sizes in advance.
// Receive callbacks run on the progress thread with no lock held: they may send and receive. A lost
// peer fails the receives waiting on it with the reason (with shared-memory-only UCX_TLS, which
// cannot detect it, the control plane does). Do not drop the last handle inside a callback.
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

// Stops the progress thread, lets the sends made so far complete, and closes the endpoints (also done
// when the last handle goes). Sends after it fail.
void ucx_close(const std::shared_ptr<void>& state);

// Calls `hook` with every payload as it arrives (on the progress thread, in each sender's order),
// before it is matched to a receive: for a transport layered on this one (nccl). Set before connect.
void ucx_on_arrival(const std::shared_ptr<void>& state, std::function<void(int from, actors::payload&)> hook);

}  // namespace loom::transport
