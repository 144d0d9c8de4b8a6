// Which node holds each expert group in hierarchical planning. Internal to the planner.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace loom::placement::detail {

// Candidate assignments (node of each group) for `group_load.size()` groups on `nodes` nodes, at most
// `max_per_node` groups on a node; each candidate is worth planning in full, the planner keeps the best.
//   - the longest-processing-time rule with groups/nodes groups per node (the usual even split);
//   - that split after pairwise group swaps that lower the heaviest node's load;
//   - when max_per_node allows uneven splits: LPT under that capacity, then moves and swaps.
// Duplicates (the same sets of groups on nodes) are left out.
std::vector<std::vector<std::uint32_t>> group_assignments(std::span<const double> group_load,
                                                          std::uint32_t nodes, std::uint32_t max_per_node);

// The first of those: groups/nodes groups per node by the longest-processing-time rule.
std::vector<std::uint32_t> even_assignment(std::span<const double> group_load, std::uint32_t nodes);

}  // namespace loom::placement::detail
