// Candidate group-to-node assignments for hierarchical planning (see node_assign.hpp).
#include "runtime/placement/node_assign.hpp"

#include <algorithm>
#include <numeric>

namespace loom::placement::detail {

namespace {

constexpr double rel_eps = 1e-12;
constexpr std::size_t max_searched_groups = 1024;  // past this, LPT alone (the search is cubic in groups)

// Longest processing time first: heaviest group onto the lightest node with room (of equally light
// ones, the one with fewest groups, so no node stays empty).
std::vector<std::uint32_t> lpt(std::span<const double> load, std::uint32_t nodes, std::uint32_t cap) {
  std::vector<std::uint32_t> order(load.size());
  std::iota(order.begin(), order.end(), 0u);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::uint32_t a, std::uint32_t b) { return load[a] > load[b]; });
  std::vector<double> node_load(nodes, 0.0);
  std::vector<std::uint32_t> used(nodes, 0), node_of(load.size(), 0);
  for (std::uint32_t grp : order) {
    std::uint32_t best = nodes;
    for (std::uint32_t n = 0; n < nodes; ++n)
      if (used[n] < cap && (best == nodes || node_load[n] < node_load[best] ||
                            (node_load[n] == node_load[best] && used[n] < used[best])))
        best = n;
    node_of[grp] = best;
    node_load[best] += load[grp];
    ++used[best];
  }
  return node_of;
}

// Moves (when `moves`) and swaps of groups between the heaviest node and another, while they bring both
// below the heaviest node's load.
void improve(std::vector<std::uint32_t>& node_of, std::span<const double> load, std::uint32_t nodes,
             std::uint32_t cap, bool moves) {
  const std::size_t groups = load.size();
  if (groups > max_searched_groups) return;
  std::vector<double> node_load(nodes, 0.0);
  std::vector<std::uint32_t> used(nodes, 0);
  for (std::size_t grp = 0; grp < groups; ++grp) {
    node_load[node_of[grp]] += load[grp];
    ++used[node_of[grp]];
  }
  for (std::size_t step = 0; step < 16 * groups + 16; ++step) {
    const auto h =
        static_cast<std::uint32_t>(std::max_element(node_load.begin(), node_load.end()) - node_load.begin());
    const double lh = node_load[h];
    double best = lh - rel_eps * lh;
    std::size_t bx = groups, by = groups;  // move bx to node bn, or swap bx and by
    std::uint32_t bn = nodes;
    for (std::size_t x = 0; x < groups; ++x) {
      if (node_of[x] != h) continue;
      for (std::uint32_t n = 0; n < nodes; ++n) {
        if (n == h) continue;
        if (moves && used[n] < cap && used[h] > 1) {
          const double m = std::max(lh - load[x], node_load[n] + load[x]);
          if (m < best) {
            best = m;
            bx = x;
            by = groups;
            bn = n;
          }
        }
        for (std::size_t y = 0; y < groups; ++y) {
          if (node_of[y] != n) continue;
          const double d = load[x] - load[y];
          if (d <= 0) continue;
          const double m = std::max(lh - d, node_load[n] + d);
          if (m < best) {
            best = m;
            bx = x;
            by = y;
            bn = n;
          }
        }
      }
    }
    if (bn == nodes) return;
    node_load[h] -= load[bx];
    node_load[bn] += load[bx];
    node_of[bx] = bn;
    if (by == groups) {  // a move
      --used[h];
      ++used[bn];
    } else {  // a swap
      node_load[bn] -= load[by];
      node_load[h] += load[by];
      node_of[by] = h;
    }
  }
}

// Node labels in order of first use, so that equal partitions compare equal.
std::vector<std::uint32_t> canonical(const std::vector<std::uint32_t>& node_of, std::uint32_t nodes) {
  std::vector<std::uint32_t> label(nodes, nodes), out(node_of.size());
  std::uint32_t next = 0;
  for (std::size_t grp = 0; grp < node_of.size(); ++grp) {
    if (label[node_of[grp]] == nodes) label[node_of[grp]] = next++;
    out[grp] = label[node_of[grp]];
  }
  return out;
}

}  // namespace

std::vector<std::uint32_t> even_assignment(std::span<const double> group_load, std::uint32_t nodes) {
  return lpt(group_load, nodes, static_cast<std::uint32_t>(group_load.size() / nodes));
}

std::vector<std::vector<std::uint32_t>> group_assignments(std::span<const double> group_load,
                                                          std::uint32_t nodes, std::uint32_t max_per_node) {
  const auto even = static_cast<std::uint32_t>(group_load.size() / nodes);
  std::vector<std::vector<std::uint32_t>> out;
  auto add = [&](std::vector<std::uint32_t> node_of) {
    bool seen = false;
    for (const auto& c : out) seen = seen || canonical(c, nodes) == canonical(node_of, nodes);
    if (!seen) out.push_back(std::move(node_of));
  };
  auto base = lpt(group_load, nodes, even);
  add(base);
  improve(base, group_load, nodes, even, false);
  add(base);
  if (max_per_node > even) {
    auto uneven = lpt(group_load, nodes, max_per_node);
    improve(uneven, group_load, nodes, max_per_node, true);
    add(std::move(uneven));
  }
  return out;
}

}  // namespace loom::placement::detail
