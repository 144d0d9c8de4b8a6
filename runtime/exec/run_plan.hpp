// What every process of a run derives from the experiment and its schedule alone — the lowered
// programs, the expert placements, which ranks hold which stage — and the pieces that turn it into
// actors: a rank's context, its driver and component actors, the coordinator's setup. The embedded
// runner (run.hpp) puts every rank in one process; the cluster runner one rank per process.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "actors/coordinator.hpp"
#include "actors/rank_context.hpp"
#include "runtime/exec/expert_balancer.hpp"
#include "runtime/exec/experiment.hpp"
#include "runtime/exec/run.hpp"
#include "runtime/lower/lowering.hpp"
#include "runtime/schedule/schedule.hpp"

namespace loom::actors {
struct device_gpu;  // actors/cuda_backend.hpp
}

namespace loom::exec {

struct run_plan {
  const experiment* e = nullptr;
  const schedule::schedule* s = nullptr;
  int stages = 1;
  int layers_per_chunk = 1;
  int world = 1;                       // pp * ep ranks
  lower::lowered_schedule lowered;
  model::model_shape shape;
  expert_policy_config policy;
  std::shared_ptr<expert_balancer> balancer;
  std::vector<model::slot_map> placements;       // per logical layer
  std::vector<std::vector<int>> stage_holders;   // pipeline ranks holding each logical stage
  double total_tokens = 1;                       // in a step, over all ranks
};

// Checks the experiment against the schedule and plans the run. `e` and `s` must outlive the plan.
expected<run_plan> make_run_plan(const experiment& e, const schedule::schedule& s);

// The state of global rank `rank`: its chunks' parameters and placements, and its transport.
std::shared_ptr<actors::rank_context> make_rank_context(const run_plan& p, int rank, actors::transport net,
                                                       const std::optional<injected_fault>& fault = {});

// The cuda backend's device side of a rank: opens this process's GPU on first use (`gpu`, shared by the
// process's ranks; GPU `rank` modulo the GPUs present, so processes of one host spread over them) and
// gives `ctx` its streams, events and device parameters. Nothing to do on the other backends.
expected<void> attach_device(const run_plan& p, actors::rank_context& ctx, std::shared_ptr<actors::device_gpu>& gpu);

struct spawned_rank {
  actors::rank_actor driver;
  std::vector<caf::actor> components;
  std::vector<int> logical_layers;  // of each (chunk, layer), for the load statistics
};
spawned_rank spawn_rank(caf::actor_system& sys, const run_plan& p, std::shared_ptr<actors::rank_context> ctx);

// The coordinator's setup for these ranks; progress goes to `on_step` (may be empty).
actors::coordinator_setup make_coordinator_setup(const run_plan& p, const std::vector<spawned_rank>& ranks,
                                                 std::function<void(const step_progress&)> on_step);

// Fills loss, gradient norms and re-plans of a result from the coordinator's outcome.
void summarize(const run_plan& p, run_result& r);

// Registers every message type the runtime's actors exchange (on every node).
void register_runtime_types(caf::actor_system_config& cfg);

}  // namespace loom::exec
