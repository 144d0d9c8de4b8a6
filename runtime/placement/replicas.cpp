// Replica counts for one domain (see replicas.hpp).
#include "runtime/placement/replicas.hpp"

#include <algorithm>
#include <numeric>
#include <queue>

namespace loom::placement::detail {

std::vector<std::uint32_t> counts_by_load_per_copy(std::span<const double> load, std::size_t slots,
                                                   std::uint32_t cap) {
  const auto experts = static_cast<std::uint32_t>(load.size());
  std::vector<std::uint32_t> count(experts, 1);
  auto lighter = [&](std::uint32_t a, std::uint32_t b) {
    const double wa = load[a] / count[a], wb = load[b] / count[b];
    return wa < wb || (wa == wb && a > b);
  };
  std::priority_queue<std::uint32_t, std::vector<std::uint32_t>, decltype(lighter)> heap(lighter);
  for (std::uint32_t e = 0; e < experts; ++e) heap.push(e);
  for (std::size_t spare = slots - experts; spare > 0 && !heap.empty();) {
    const std::uint32_t e = heap.top();
    heap.pop();
    if (count[e] >= cap) continue;
    ++count[e];
    --spare;
    heap.push(e);
  }
  return count;
}

double packing_bound(std::span<const copy> c, std::uint32_t gpus, std::uint32_t spg, bool distinct,
                     double total) {
  std::vector<std::uint32_t> picked;
  std::vector<double> tail;
  return packing_bound(c, gpus, spg, distinct, total, picked, tail);
}

double packing_bound(std::span<const copy> c, std::uint32_t gpus, std::uint32_t spg, bool distinct,
                     double total, std::vector<std::uint32_t>& picked, std::vector<double>& tail) {
  const std::size_t n = c.size();
  double bound = total / gpus;
  if (n == 0) return bound;
  // tail[j]: the sum of the j smallest copies (what a GPU holds besides its large copies)
  tail.assign(1, 0.0);
  for (std::size_t j = 1; j < spg && j <= n; ++j) tail.push_back(tail.back() + c[n - j].load);
  // ... of the j smallest after index `after`
  auto smallest = [&](std::size_t j, std::size_t after) {
    return tail[std::min({j, n - after - 1, tail.size() - 1})];
  };
  bound = std::max(bound, c[0].load + smallest(spg - 1, 0));
  for (std::uint32_t k = 1; k < spg; ++k) {
    const std::size_t last = std::size_t{k} * gpus;  // index of the (k*gpus+1)-th largest copy
    if (last >= n) break;
    // The k+1 smallest of the k*gpus+1 largest copies (of k+1 different experts when copies of one
    // expert must sit on different GPUs).
    double window = 0;
    picked.clear();
    for (std::size_t i = last + 1; i-- > 0 && picked.size() <= k;) {
      if (distinct && std::find(picked.begin(), picked.end(), c[i].expert) != picked.end()) continue;
      picked.push_back(c[i].expert);
      window += c[i].load;
    }
    bound = std::max(bound, window + smallest(spg - k - 1, last));
  }
  return bound;
}

std::vector<std::uint32_t> counts_by_packing_bound(std::span<const double> load, std::uint32_t gpus,
                                                   std::uint32_t spg, std::uint32_t cap) {
  const auto experts = static_cast<std::uint32_t>(load.size());
  const std::size_t slots = std::size_t{gpus} * spg;
  const bool distinct = experts >= spg;
  const double total = std::accumulate(load.begin(), load.end(), 0.0);
  std::vector<std::uint32_t> count(experts, 1);
  auto heavier = [](const copy& a, const copy& b) {
    return a.load > b.load || (a.load == b.load && a.expert < b.expert);
  };
  std::vector<copy> copies, trial;
  std::vector<std::uint32_t> picked;
  std::vector<double> tail;
  copies.reserve(slots);
  trial.reserve(slots);
  for (std::uint32_t e = 0; e < experts; ++e) copies.push_back({load[e], e});
  std::sort(copies.begin(), copies.end(), heavier);
  // copies with e holding `count` copies of load/count: drop e's copies, add the new ones in order.
  auto resplit = [&](std::uint32_t e, std::uint32_t count_e, std::vector<copy>& out) {
    const copy fresh{load[e] / count_e, e};
    out.clear();
    std::uint32_t add = count_e;
    for (const copy& c : copies) {
      if (c.expert == e) continue;
      for (; add > 0 && heavier(fresh, c); --add) out.push_back(fresh);
      out.push_back(c);
    }
    out.insert(out.end(), add, fresh);
  };
  std::vector<std::uint32_t> order(experts);
  std::iota(order.begin(), order.end(), 0u);
  constexpr std::size_t candidates = 8;

  // Past this much work (spare slots x candidates x copies) the simpler rule has to do.
  constexpr std::size_t work_budget = 50'000'000;
  if ((slots - experts) * candidates * slots > work_budget) return counts_by_load_per_copy(load, slots, cap);
  for (std::size_t spare = slots - experts; spare > 0; --spare) {
    const std::size_t k = std::min<std::size_t>(candidates, experts);
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](std::uint32_t a, std::uint32_t b) {
      const double wa = load[a] / count[a], wb = load[b] / count[b];
      return wa > wb || (wa == wb && a < b);
    });
    double best = 0;
    std::uint32_t pick = experts;
    for (std::size_t i = 0; i < k; ++i) {
      const std::uint32_t e = order[i];
      if (count[e] >= cap) continue;
      resplit(e, count[e] + 1, trial);
      const double b = packing_bound(trial, gpus, spg, distinct, total, picked, tail);
      if (pick == experts || b < best) {
        best = b;
        pick = e;
      }
    }
    if (pick == experts) {  // the candidates are at their cap: the highest load per copy below it
      for (std::uint32_t e = 0; e < experts; ++e)
        if (count[e] < cap && (pick == experts || load[e] / count[e] > load[pick] / count[pick])) pick = e;
      if (pick == experts) break;
    }
    ++count[pick];
    resplit(pick, count[pick], trial);
    copies.swap(trial);
  }
  return count;
}

}  // namespace loom::placement::detail
