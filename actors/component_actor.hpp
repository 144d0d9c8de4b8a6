// A component actor: one per (rank, local chunk, component) — attention, dispatch, MLP or combine.
// It runs the ops the rank driver sends it and answers each with an op_result: compute ops run to
// completion in the handler; dispatch and combine exchange rows with the other ranks of the
// expert-parallel group through the transport and answer when every block has arrived; on the timed
// backend every op only takes its cost-table duration, as a timer.
#pragma once

#include <memory>

#include "actors/messages.hpp"
#include "actors/program.hpp"
#include "actors/rank_context.hpp"

namespace loom::actors {

component_actor spawn_component(caf::actor_system& sys, std::shared_ptr<rank_context> ctx, component_role role);

}  // namespace loom::actors
