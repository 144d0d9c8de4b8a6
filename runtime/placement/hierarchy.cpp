// Hierarchical planning (see hierarchy.hpp).
#include "runtime/placement/hierarchy.hpp"

#include <algorithm>
#include <map>

#include "runtime/placement/node_assign.hpp"

namespace loom::placement::detail {

namespace {

constexpr double rel_eps = 1e-12;

class node_search {
 public:
  node_search(std::span<const double> load, std::uint32_t groups, std::uint32_t nodes, std::uint32_t gpn,
              std::uint32_t spg)
      : load_(load),
        groups_(groups),
        nodes_(nodes),
        gpn_(gpn),
        spg_(spg),
        per_group_(static_cast<std::uint32_t>(load.size() / groups)),
        cap_(static_cast<std::uint32_t>(std::size_t{gpn} * spg / per_group_)),
        group_load_(groups, 0.0) {
    for (std::size_t e = 0; e < load.size(); ++e) group_load_[e / per_group_] += load[e];
  }

  std::vector<node_plan> run();

 private:
  // The plan of a node holding `groups` (ascending), planned once and remembered.
  const domain_plan& plan_of(const std::vector<std::uint32_t>& groups);
  double sum_of(const std::vector<std::uint32_t>& groups) const;
  bool improve_once(std::vector<std::vector<std::uint32_t>>& layout);

  std::span<const double> load_;
  std::uint32_t groups_, nodes_, gpn_, spg_, per_group_, cap_;
  std::vector<double> group_load_;
  std::map<std::vector<std::uint32_t>, domain_plan> cache_;
  std::size_t planned_ = 0;  // nodes planned so far (the work bound)
  std::vector<double> scratch_;
};

const domain_plan& node_search::plan_of(const std::vector<std::uint32_t>& groups) {
  auto it = cache_.find(groups);
  if (it != cache_.end()) return it->second;
  scratch_.clear();
  for (std::uint32_t grp : groups)
    scratch_.insert(scratch_.end(), load_.begin() + std::size_t{grp} * per_group_,
                    load_.begin() + std::size_t{grp + 1} * per_group_);
  ++planned_;
  return cache_.emplace(groups, plan_domain(scratch_, gpn_, spg_)).first->second;
}

double node_search::sum_of(const std::vector<std::uint32_t>& groups) const {
  double s = 0;
  for (std::uint32_t grp : groups) s += group_load_[grp];
  return s;
}

// One exchange between the node with the heaviest GPU and another node that lowers the heaviest GPU of
// the two below it; false when none is found.
bool node_search::improve_once(std::vector<std::vector<std::uint32_t>>& layout) {
  std::uint32_t crit = 0;
  for (std::uint32_t n = 1; n < nodes_; ++n)
    if (plan_of(layout[n]).max_load > plan_of(layout[crit]).max_load) crit = n;
  const double top = plan_of(layout[crit]).max_load, limit = top - rel_eps * top;

  struct candidate {
    double bound;  // the larger node load per GPU after the exchange: no plan can beat it
    std::uint32_t other;
    std::vector<std::uint32_t> a, b;  // the new group sets of crit and other
  };
  std::vector<candidate> cands;
  auto consider = [&](std::uint32_t other, std::vector<std::uint32_t> a, std::vector<std::uint32_t> b) {
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    const double bound = std::max(sum_of(a), sum_of(b)) / gpn_;
    if (bound < limit) cands.push_back({bound, other, std::move(a), std::move(b)});
  };
  const auto& mine = layout[crit];
  for (std::uint32_t other = 0; other < nodes_; ++other) {
    if (other == crit) continue;
    const auto& theirs = layout[other];
    for (std::size_t i = 0; i < mine.size(); ++i) {
      if (theirs.size() < cap_ && mine.size() > 1) {  // move group mine[i] over
        auto a = mine, b = theirs;
        b.push_back(a[i]);
        a.erase(a.begin() + static_cast<std::ptrdiff_t>(i));
        consider(other, std::move(a), std::move(b));
      }
      for (std::size_t j = 0; j < theirs.size(); ++j) {  // swap mine[i] and theirs[j]
        auto a = mine, b = theirs;
        std::swap(a[i], b[j]);
        consider(other, std::move(a), std::move(b));
      }
    }
  }
  std::stable_sort(cands.begin(), cands.end(),
                   [](const candidate& x, const candidate& y) { return x.bound < y.bound; });
  const std::size_t budget = 8 * std::size_t{nodes_} + 16;
  for (const candidate& c : cands) {
    if (planned_ >= budget) return false;
    if (plan_of(c.a).max_load >= limit) continue;
    if (plan_of(c.b).max_load >= limit) continue;
    layout[crit] = c.a;
    layout[c.other] = c.b;
    return true;
  }
  return false;
}

std::vector<node_plan> node_search::run() {
  // 1. whole assignments
  std::vector<std::vector<std::uint32_t>> best;
  double best_max = 0, best_sq = 0;
  for (const auto& node_of : group_assignments(group_load_, nodes_, cap_)) {
    std::vector<std::vector<std::uint32_t>> layout(nodes_);
    for (std::uint32_t grp = 0; grp < groups_; ++grp) layout[node_of[grp]].push_back(grp);
    if (std::any_of(layout.begin(), layout.end(), [](const auto& g) { return g.empty(); })) continue;
    double mx = 0, sq = 0;
    for (const auto& groups : layout) {
      const domain_plan& p = plan_of(groups);
      mx = std::max(mx, p.max_load);
      sq += p.sum_sq;
    }
    if (best.empty() || mx < best_max || (mx == best_max && sq < best_sq)) {
      best = std::move(layout);
      best_max = mx;
      best_sq = sq;
    }
  }
  // 2. exchanges (quadratic in groups per step: only for group counts of a sane size)
  constexpr std::uint32_t max_exchanged_groups = 256;
  if (groups_ <= max_exchanged_groups)
    for (std::size_t step = 0; step < 4 * std::size_t{groups_}; ++step)
      if (!improve_once(best)) break;
  std::vector<node_plan> out(nodes_);
  for (std::uint32_t n = 0; n < nodes_; ++n) out[n] = {best[n], plan_of(best[n])};
  return out;
}

}  // namespace

std::vector<node_plan> plan_nodes(std::span<const double> load, std::uint32_t groups, std::uint32_t nodes,
                                  std::uint32_t gpus_per_node, std::uint32_t slots_per_gpu) {
  return node_search(load, groups, nodes, gpus_per_node, slots_per_gpu).run();
}

}  // namespace loom::placement::detail
