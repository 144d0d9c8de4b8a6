// The experiment coordinator: runs the steps (every rank's program, then the gradient sums, then
// the optimizer), gathers what the ranks measured, and turns any failure into one experiment error:
// a rank's error, a dead actor, or a watchdog that sees no rank make progress for too long names
// the ranks, what they wait for, and stops everything.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "actors/messages.hpp"

namespace loom::actors {

struct step_outcome {
  std::vector<step_report> ranks;  // by global rank
  double loss_sum = 0;             // over all ranks' heads
  double grad_norm = 0;
  std::int64_t wall_ns = 0;        // the whole step, sums and optimizer included
  std::vector<double> load;        // [logical layer][expert] token copies routed in the step
  // Expert migration after the step (when the placement was re-planned).
  bool migrated = false;
  std::int64_t migrate_ns = 0;
  std::int64_t migrate_bytes = 0;
  std::int64_t experts_moved = 0;
};

struct run_outcome {
  bool ok = true;
  std::string error;
  std::vector<step_outcome> steps;  // completed steps (all of them when ok)
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, step_outcome& x) {
  return f(caf::meta::type_name("loom::step_outcome"), x.ranks, x.loss_sum, x.grad_norm, x.wall_ns, x.load, x.migrated,
           x.migrate_ns, x.migrate_bytes, x.experts_moved);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, run_outcome& x) {
  return f(caf::meta::type_name("loom::run_outcome"), x.ok, x.error, x.steps);
}

struct coordinator_setup {
  std::vector<rank_actor> ranks;     // by global rank
  std::vector<caf::actor> others;    // component actors: stopped with the ranks on failure
  int steps = 1;
  double watchdog_seconds = 120;
  // Maps a rank's load vector ([chunk][layer][expert]) onto the model's layers: the logical layer of
  // each (chunk, layer) of each rank. Empty: no load statistics.
  std::vector<std::vector<int>> logical_layer;  // [global rank][chunk * layers_per_chunk + layer]
  int logical_layers = 0;
  int experts = 0;
  bool send_load = false;            // hand the step's load to the optimizer (bias updates)
  // Expert re-planning after each step, from the step's load: the layers to re-place and their new
  // placements (an empty request keeps the placement). Unset: never.
  std::function<migrate_request(int step, const std::vector<double>& load)> replan;
  std::function<std::string(const rank_status&)> describe;  // words for the watchdog (action tokens)
  std::function<std::string(int)> rank_name;                // "rank 2 (ep 1)" for a global rank
  std::function<void(int step, const step_outcome&)> on_step;  // progress, from the coordinator's thread
  std::function<void(const loom::error&)> on_abort;            // tears the data plane down
};

using coordinator_actor = caf::typed_actor<caf::replies_to<run_atom>::with<run_outcome>, caf::reacts_to<watch_atom, std::int64_t>>;

coordinator_actor spawn_coordinator(caf::actor_system& sys, coordinator_setup setup);

// Registers the coordinator's message types (besides register_message_types).
void register_coordinator_types(caf::actor_system_config& cfg);

}  // namespace loom::actors
