// Hierarchical planning: expert groups onto nodes, then each node planned as its own domain. Internal to
// the planner.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "runtime/placement/domain.hpp"

namespace loom::placement::detail {

struct node_plan {
  std::vector<std::uint32_t> groups;  // the groups on this node, ascending
  domain_plan plan;                   // over the node's experts: its groups' experts in group order
};

// Plans `load` (experts in `groups` contiguous groups) onto `nodes` nodes of `gpus_per_node` GPUs with
// `slots_per_gpu` slots each, every group on one node:
//   1. a few group-to-node assignments (node_assign.hpp), each planned in full; the best is kept;
//   2. then swaps of groups (and moves, where a node has room) between the node with the heaviest GPU
//      and another node, each re-planned, while that lowers the heaviest GPU. Candidates whose node
//      loads alone rule out a gain are skipped; the number of re-planned nodes is bounded, and this step
//      is left out past 256 groups.
std::vector<node_plan> plan_nodes(std::span<const double> load, std::uint32_t groups, std::uint32_t nodes,
                                  std::uint32_t gpus_per_node, std::uint32_t slots_per_gpu);

}  // namespace loom::placement::detail
