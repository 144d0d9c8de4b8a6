// Collectives built from a transport's own sends and receives, for transports with no native
// collectives (`local`, `ucx`): an all-to-all is one send and one receive per peer; a barrier is an
// all-to-all of empty payloads. Both complete through their callback, once, with the first error
// if any peer fails.
#pragma once

#include "actors/transport.hpp"

namespace loom::actors {

void all_to_all_by_messages(const transport_ops& ops, void* state, int self, const std::vector<int>& group,
                            std::uint64_t tag, std::vector<payload> out, all_to_all_callback done);

void barrier_by_messages(const transport_ops& ops, void* state, int self, const std::vector<int>& group,
                         std::uint64_t tag, barrier_callback done);

}  // namespace loom::actors
