// The redundant-expert placement planner: which logical expert each physical expert slot holds.
//
// Given one layer's load per logical expert and a topology (slots, expert groups, nodes, GPUs), plan_layer
// chooses how many copies each expert gets and which GPU holds each copy, minimising the imbalance
// (heaviest GPU load / mean GPU load, a copy carrying load/copies of its expert). Slots are laid out GPU
// after GPU: slot s is on GPU s / slots_per_gpu. When num_groups % num_nodes == 0 planning is
// hierarchical: each group (a contiguous block of experts/num_groups experts) lives entirely on one node
// and its copies stay there (a node may hold more groups than another when its slots suffice); otherwise
// all GPUs form one domain. Within a domain no GPU holds two copies
// of one expert, unless a GPU has more slots than the domain has experts (then it cannot be avoided), or
// unless the plain plan of the anchor planner (which stacks copies freely) beats every plan without
// stacking: then that plan, improved by the same local search, is returned with `stacked` set. So a plan
// is never less balanced than the anchor's. Errors come back as loom::expected values; nothing throws.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include "support/expected.hpp"

namespace loom::placement {

// The shape of the placement problem (num_slots is `num_replicas` in the case files).
struct topology {
  std::size_t num_slots = 0;   // physical expert slots, >= number of experts, divisible by num_gpus
  std::size_t num_groups = 1;  // expert groups; the expert count must divide by it
  std::size_t num_nodes = 1;   // num_gpus must divide by it
  std::size_t num_gpus = 1;

  std::size_t slots_per_gpu() const { return num_slots / num_gpus; }
  std::size_t gpus_per_node() const { return num_gpus / num_nodes; }
  // Groups kept on one node: num_groups % num_nodes == 0.
  bool hierarchical() const { return num_groups % num_nodes == 0; }
};

struct layer_plan {
  std::vector<std::size_t> phy2log;         // logical expert of each slot, GPU after GPU
  std::vector<std::size_t> replica_counts;  // copies of each logical expert (sum = num_slots)
  double imbalance = 1.0;                   // heaviest GPU load / mean GPU load (1 when all loads are 0)
  bool hierarchical = false;                // planned with groups kept on one node
  bool stacked = false;                     // copies of an expert were let share a GPU avoidably (see above)
};

// Checks that `topo` admits a plan for `num_experts` experts (divisibility, slots >= experts, limits).
expected<void> check_topology(std::size_t num_experts, const topology& topo);

// Plans one layer. `load[e]` is the load of logical expert e: finite and >= 0.
expected<layer_plan> plan_layer(std::span<const double> load, const topology& topo);

// The anchor planner's rule alone, for comparison: groups spread evenly over nodes by the
// longest-processing-time rule, copies to the highest load per copy, each copy (by falling load) onto the
// lightest GPU with a free slot, copies of one expert free to share a GPU (`stacked` is set). It
// reproduces the anchor_imbalance of the shared cases.
expected<layer_plan> plan_layer_plain(std::span<const double> load, const topology& topo);

// Plans each layer of loads[layer][expert] (every layer with the same expert count); error messages name
// the layer.
expected<std::vector<layer_plan>> plan_layers(const std::vector<std::vector<double>>& loads,
                                              const topology& topo);

// The imbalance of any placement: heaviest GPU load / mean GPU load over `num_gpus` GPUs of
// phy2log.size() / num_gpus slots each. Every expert needs at least one copy. 1 when all loads are 0.
expected<double> imbalance(std::span<const double> load, std::span<const std::size_t> phy2log,
                           std::size_t num_gpus);

// Checks a placement against `topo`: one slot per entry, every expert index in range, every expert with
// at least one copy, `replica_counts` (when not empty) matching the copies, each group on one node when
// topo.hierarchical(), and, unless `allow_stacking`, no avoidable duplicate (two copies of an expert on
// one GPU while that GPU's domain, its node or all GPUs, has at least slots_per_gpu experts).
expected<void> validate(std::size_t num_experts, std::span<const std::size_t> phy2log, const topology& topo,
                        std::span<const std::size_t> replica_counts = {}, bool allow_stacking = false);

}  // namespace loom::placement
