// imbalance() and validate(): the metric and the rules any placement is held to.
#include <algorithm>
#include <string>

#include "runtime/placement/planner.hpp"

namespace loom::placement {

namespace {

unexpected bad(std::string msg) { return unexpected(errc::invalid_argument, std::move(msg)); }
std::string str(std::size_t v) { return std::to_string(v); }

// Copies of each expert; an error when an entry is out of range or an expert has none.
expected<std::vector<std::size_t>> copies_of(std::size_t num_experts, std::span<const std::size_t> phy2log) {
  std::vector<std::size_t> copies(num_experts, 0);
  for (std::size_t s = 0; s < phy2log.size(); ++s) {
    if (phy2log[s] >= num_experts)
      return bad("slot " + str(s) + " holds expert " + str(phy2log[s]) + ", but there are only " +
                 str(num_experts) + " experts");
    ++copies[phy2log[s]];
  }
  for (std::size_t e = 0; e < num_experts; ++e)
    if (copies[e] == 0) return bad("expert " + str(e) + " has no copy in any slot");
  return copies;
}

}  // namespace

expected<double> imbalance(std::span<const double> load, std::span<const std::size_t> phy2log,
                           std::size_t num_gpus) {
  if (num_gpus == 0 || phy2log.empty() || phy2log.size() % num_gpus != 0)
    return bad(str(phy2log.size()) + " slots cannot be split evenly over " + str(num_gpus) + " GPUs");
  auto copies = copies_of(load.size(), phy2log);
  if (!copies) return forward_error(copies);
  const std::size_t spg = phy2log.size() / num_gpus;
  double heaviest = 0, total = 0;
  for (std::size_t g = 0; g < num_gpus; ++g) {
    double l = 0;
    for (std::size_t i = 0; i < spg; ++i) {
      const std::size_t e = phy2log[g * spg + i];
      l += load[e] / static_cast<double>((*copies)[e]);
    }
    heaviest = std::max(heaviest, l);
    total += l;
  }
  if (total <= 0) return 1.0;
  return heaviest / (total / static_cast<double>(num_gpus));
}

expected<void> validate(std::size_t num_experts, std::span<const std::size_t> phy2log, const topology& topo,
                        std::span<const std::size_t> replica_counts, bool allow_stacking) {
  if (auto ok = check_topology(num_experts, topo); !ok) return forward_error(ok);
  if (phy2log.size() != topo.num_slots)
    return bad("the placement has " + str(phy2log.size()) + " slots, the topology " + str(topo.num_slots));
  auto copies = copies_of(num_experts, phy2log);
  if (!copies) return forward_error(copies);
  if (!replica_counts.empty()) {
    if (replica_counts.size() != num_experts)
      return bad(str(replica_counts.size()) + " replica counts for " + str(num_experts) + " experts");
    for (std::size_t e = 0; e < num_experts; ++e)
      if (replica_counts[e] != (*copies)[e])
        return bad("expert " + str(e) + " has " + str((*copies)[e]) + " copies but a replica count of " +
                   str(replica_counts[e]));
  }
  const std::size_t spg = topo.slots_per_gpu(), slots_per_node = topo.num_slots / topo.num_nodes;
  const bool hier = topo.hierarchical();
  if (hier) {
    const std::size_t per_group = num_experts / topo.num_groups;
    std::vector<std::size_t> node_of_group(topo.num_groups, topo.num_nodes);
    for (std::size_t s = 0; s < phy2log.size(); ++s) {
      const std::size_t grp = phy2log[s] / per_group, node = s / slots_per_node;
      if (node_of_group[grp] == topo.num_nodes) node_of_group[grp] = node;
      if (node_of_group[grp] != node)
        return bad("group " + str(grp) + " is split over nodes " + str(node_of_group[grp]) + " and " +
                   str(node) + " (expert " + str(phy2log[s]) + " in slot " + str(s) + ")");
    }
  }
  // Duplicates on a GPU are avoidable when the GPU's domain has at least slots_per_gpu experts.
  if (allow_stacking) return {};
  const std::size_t domain_slots = hier ? slots_per_node : topo.num_slots;
  std::vector<std::size_t> seen(num_experts, topo.num_slots);  // last domain / GPU an expert was seen in
  for (std::size_t first = 0; first < phy2log.size(); first += domain_slots) {
    std::size_t distinct = 0;
    for (std::size_t s = first; s < first + domain_slots; ++s)
      if (seen[phy2log[s]] != first) seen[phy2log[s]] = first, ++distinct;
    if (distinct < spg) continue;
    std::fill(seen.begin(), seen.end(), topo.num_slots);
    for (std::size_t s = first; s < first + domain_slots; ++s) {
      const std::size_t gpu_first = s - s % spg;
      if (seen[phy2log[s]] == gpu_first)
        return bad("GPU " + str(s / spg) + " holds expert " + str(phy2log[s]) +
                   " twice although its domain has enough experts to avoid it");
      seen[phy2log[s]] = gpu_first;
    }
  }
  return {};
}

}  // namespace loom::placement
