// The rank driver: one per rank. Each step it walks the rank's lowered program: it issues the head
// of the compute stream and the head of the comm stream to the chunk's component actors as soon as
// their dependencies are done, receives pipeline inputs through the transport and sends outputs
// once their action has completed. After the step it sums gradients with the ranks that hold the
// same tensors and applies the optimizer. It never blocks: everything it waits for is a message.
#pragma once

#include <array>
#include <memory>
#include <vector>

#include "actors/messages.hpp"
#include "actors/program.hpp"
#include "actors/rank_context.hpp"
#include "actors/sync_plan.hpp"
#include "kernels/cpu/adamw.hpp"

namespace loom::actors {

struct driver_setup {
  std::shared_ptr<rank_context> ctx;
  std::shared_ptr<const rank_program> program;
  std::vector<std::array<component_actor, 4>> components;  // [chunk][component_role]
  std::vector<std::vector<int>> stage_holders;  // pipeline ranks holding each logical stage
  kernels::cpu::adamw_config adamw;
  float bias_update_rate = 0;  // sigmoid gating: the router bias step; 0: no bias updates
  int logical_layers = 0;      // layers of the whole model (for the load vector)
};

rank_actor spawn_rank_driver(caf::actor_system& sys, driver_setup setup);

}  // namespace loom::actors
