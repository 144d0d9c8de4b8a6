// The work of each component op on a rank, apart from any actor: compute ops run to completion on
// the calling thread; communication ops are cut in two around the exchange (what to send to each
// rank of the expert-parallel group, then what to do with what came back).
#pragma once

#include <vector>

#include "actors/messages.hpp"
#include "actors/program.hpp"
#include "actors/rank_context.hpp"
#include "kernels/model/moe_block.hpp"

namespace loom::actors {

// Attention, MLP, embedding and head ops (forward, input and weight parts). With the cuda backend
// these enqueue on the GPU and return (actors/cuda_backend.hpp).
expected<void> run_compute(rank_context& ctx, const op_request& op);

// Dispatch and combine ops: the payload for each expert-parallel rank (index = ep rank), then the
// payloads received from each.
expected<std::vector<payload>> exchange_out(rank_context& ctx, const op_request& op);
expected<void> exchange_in(rank_context& ctx, const op_request& op, std::vector<payload> from);

// The transport tag of an op's exchange, the same on every rank of the group.
tag exchange_tag(const rank_context& ctx, const op_request& op);
// Global rank of member `ep_index` of this rank's expert-parallel group.
int group_peer(const rank_context& ctx, int ep_index);

payload to_payload(model::block b);
model::block from_payload(payload p);

}  // namespace loom::actors
