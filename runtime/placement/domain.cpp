// One domain's plan: replica counts, greedy packing, then local search (see domain.hpp).
#include "runtime/placement/domain.hpp"

#include <algorithm>
#include <limits>
#include <numeric>
#include <queue>
#include <utility>

#include "runtime/placement/replicas.hpp"

namespace loom::placement::detail {

namespace {

// Improvements smaller than this fraction of the heaviest load are rounding noise, not progress.
constexpr double rel_eps = 1e-12;

// Candidate moves one local search may look at (a few tens of milliseconds at most).
constexpr std::size_t work_budget = 50'000'000;

class domain_search {
 public:
  // With `stacking`, copies of one expert may share a GPU even when that could be avoided.
  domain_search(std::span<const double> load, std::uint32_t gpus, std::uint32_t slots_per_gpu, bool stacking)
      : load_(load),
        experts_(static_cast<std::uint32_t>(load.size())),
        gpus_(gpus),
        spg_(slots_per_gpu),
        strict_(!stacking && experts_ >= slots_per_gpu),
        cap_(strict_ ? gpus : std::numeric_limits<std::uint32_t>::max()),
        count_(experts_, 1),
        per_copy_(load.begin(), load.end()),
        items_(std::size_t{gpus} * slots_per_gpu, 0),
        fill_(gpus, 0),
        on_(std::size_t{gpus} * experts_, 0),
        gpu_load_(gpus, 0.0) {}

  std::uint32_t cap() const { return cap_; }
  void set_counts(std::vector<std::uint32_t> counts);
  // Longest processing time first onto the lightest GPU with a free slot; with `spread`, among the GPUs
  // holding the fewest copies of the expert (none when strict).
  void pack(bool spread);
  void adopt(const domain_plan& plan);
  // Counts and packing at once: experts by falling load, each split into the fewest copies whose
  // placement on the lightest GPUs stays within `target` (or the fewest that come closest), spare slots
  // left at the end to the highest load per copy.
  void pack_to_target(double target);
  void improve();
  domain_plan result() const;

 private:
  std::uint32_t& on(std::uint32_t g, std::uint32_t e) { return on_[std::size_t{g} * experts_ + e]; }
  std::uint32_t* gpu_items(std::uint32_t g) { return items_.data() + std::size_t{g} * spg_; }
  void place(std::uint32_t g, std::uint32_t e);
  void make_room_and_place(std::uint32_t e);
  std::uint32_t heaviest() const;
  bool try_swap(std::uint32_t h);
  bool try_resplit(std::uint32_t h);
  void recompute_loads();

  std::span<const double> load_;
  std::uint32_t experts_, gpus_, spg_;
  bool strict_;        // no GPU may hold an expert twice
  std::uint32_t cap_;  // most copies of one expert
  std::vector<std::uint32_t> count_;
  std::vector<double> per_copy_;      // load_[e] / count_[e]
  std::vector<std::uint32_t> items_;  // GPU after GPU, spg_ each
  std::vector<std::uint32_t> fill_;   // slots used per GPU while packing
  std::vector<std::uint32_t> on_;     // copies of expert e on GPU g
  std::vector<double> gpu_load_;
  // Scratch for try_resplit.
  std::vector<std::uint32_t> holder_start_, holders_, by_load_, stamp_, scratch_;
  std::uint32_t tick_ = 0;
};

void domain_search::set_counts(std::vector<std::uint32_t> counts) {
  count_ = std::move(counts);
  for (std::uint32_t e = 0; e < experts_; ++e) per_copy_[e] = load_[e] / count_[e];
}

void domain_search::place(std::uint32_t g, std::uint32_t e) {
  gpu_items(g)[fill_[g]++] = e;
  ++on(g, e);
  gpu_load_[g] += per_copy_[e];
}

// Every GPU with a free slot already holds e: move some expert f from a full GPU h without e onto a
// GPU g with a free slot (g lacks f: it holds fewer distinct experts than h), then put e on h.
void domain_search::make_room_and_place(std::uint32_t e) {
  double best = std::numeric_limits<double>::infinity();
  std::uint32_t bg = 0, bh = 0, bi = 0;
  for (std::uint32_t g = 0; g < gpus_; ++g) {
    if (fill_[g] == spg_) continue;
    for (std::uint32_t h = 0; h < gpus_; ++h) {
      if (fill_[h] != spg_ || on(h, e) != 0) continue;
      for (std::uint32_t i = 0; i < spg_; ++i) {
        std::uint32_t f = gpu_items(h)[i];
        if (on(g, f) != 0) continue;
        double m = std::max(gpu_load_[g] + per_copy_[f], gpu_load_[h] - per_copy_[f] + per_copy_[e]);
        if (m < best) {
          best = m;
          bg = g;
          bh = h;
          bi = i;
        }
      }
    }
  }
  if (best == std::numeric_limits<double>::infinity()) {  // cannot happen (see above); stay memory-safe
    for (std::uint32_t g = 0; g < gpus_; ++g)
      if (fill_[g] < spg_) {
        place(g, e);
        return;
      }
    return;
  }
  std::uint32_t* hi = gpu_items(bh);
  std::uint32_t f = hi[bi];
  hi[bi] = hi[--fill_[bh]];
  --on(bh, f);
  gpu_load_[bh] -= per_copy_[f];
  place(bg, f);
  place(bh, e);
}

void domain_search::adopt(const domain_plan& plan) {
  set_counts(plan.counts);
  items_ = plan.slots;
  std::fill(on_.begin(), on_.end(), 0u);
  for (std::uint32_t g = 0; g < gpus_; ++g) {
    fill_[g] = spg_;
    for (std::uint32_t i = 0; i < spg_; ++i) ++on(g, gpu_items(g)[i]);
  }
  recompute_loads();
}

void domain_search::pack_to_target(double target) {
  std::fill(fill_.begin(), fill_.end(), 0u);
  std::fill(on_.begin(), on_.end(), 0u);
  std::fill(gpu_load_.begin(), gpu_load_.end(), 0.0);
  std::vector<std::uint32_t> order(experts_), eligible;
  std::iota(order.begin(), order.end(), 0u);
  std::stable_sort(order.begin(), order.end(),
                   [this](std::uint32_t a, std::uint32_t b) { return load_[a] > load_[b]; });
  eligible.reserve(gpus_);
  auto collect = [&](std::uint32_t e) {
    eligible.clear();
    for (std::uint32_t g = 0; g < gpus_; ++g)
      if (fill_[g] < spg_ && !(strict_ && on(g, e) != 0)) eligible.push_back(g);
    std::stable_sort(eligible.begin(), eligible.end(),
                     [this](std::uint32_t a, std::uint32_t b) { return gpu_load_[a] < gpu_load_[b]; });
  };
  std::size_t spare = items_.size() - experts_;
  for (std::uint32_t e : order) {
    collect(e);
    const std::size_t most = std::min<std::size_t>({cap_, spare + 1, eligible.size()});
    std::size_t pick = 1;
    double closest = std::numeric_limits<double>::infinity();
    for (std::size_t r = 1; r <= most; ++r) {
      const double peak = gpu_load_[eligible[r - 1]] + load_[e] / static_cast<double>(r);
      if (peak < closest) {
        closest = peak;
        pick = r;
      }
      if (peak <= target) break;
    }
    count_[e] = static_cast<std::uint32_t>(pick);
    per_copy_[e] = load_[e] / count_[e];
    spare -= pick - 1;
    if (eligible.empty()) {
      make_room_and_place(e);
      continue;
    }
    for (std::size_t i = 0; i < pick; ++i) place(eligible[i], e);
  }
  for (; spare > 0; --spare) {
    std::uint32_t pick = experts_;
    for (std::uint32_t e = 0; e < experts_; ++e)
      if (count_[e] < cap_ && (pick == experts_ || per_copy_[e] > per_copy_[pick])) pick = e;
    if (pick == experts_) return;  // every expert at its cap: cannot happen, as caps sum to >= slots
    const double old_w = per_copy_[pick];
    per_copy_[pick] = load_[pick] / ++count_[pick];
    for (std::uint32_t g = 0; g < gpus_; ++g) gpu_load_[g] += on(g, pick) * (per_copy_[pick] - old_w);
    collect(pick);
    if (eligible.empty())
      make_room_and_place(pick);
    else
      place(eligible.front(), pick);
  }
}

void domain_search::pack(bool spread) {
  std::vector<std::uint32_t> copies;
  copies.reserve(items_.size());
  for (std::uint32_t e = 0; e < experts_; ++e)
    for (std::uint32_t c = 0; c < count_[e]; ++c) copies.push_back(e);
  std::stable_sort(copies.begin(), copies.end(),
                   [this](std::uint32_t a, std::uint32_t b) { return per_copy_[a] > per_copy_[b]; });
  for (std::uint32_t e : copies) {
    // The lightest GPU with a free slot, among those without e (when allowed: fewest copies of e).
    std::uint32_t best = gpus_;
    for (std::uint32_t g = 0; g < gpus_; ++g) {
      if (fill_[g] == spg_) continue;
      if (strict_ && on(g, e) != 0) continue;
      if (best == gpus_ || (spread && on(g, e) < on(best, e)) ||
          ((!spread || on(g, e) == on(best, e)) && gpu_load_[g] < gpu_load_[best]))
        best = g;
    }
    if (best == gpus_)
      make_room_and_place(e);
    else
      place(best, e);
  }
}

std::uint32_t domain_search::heaviest() const {
  return static_cast<std::uint32_t>(std::max_element(gpu_load_.begin(), gpu_load_.end()) - gpu_load_.begin());
}

// The best exchange of one copy on the heaviest GPU h with a lighter copy on another GPU g, if it
// brings both below h's load.
bool domain_search::try_swap(std::uint32_t h) {
  const double lh = gpu_load_[h];
  double best = lh - rel_eps * lh;
  std::uint32_t bg = gpus_, bi = 0, bj = 0;
  std::uint32_t* hi = gpu_items(h);
  // Lightest GPUs first: a swap with g leaves at least (lh + lg) / 2 on one of the two, so once that
  // is no better than the best swap found, no heavier GPU can beat it.
  by_load_.resize(gpus_);
  std::iota(by_load_.begin(), by_load_.end(), 0u);
  std::sort(by_load_.begin(), by_load_.end(), [this](std::uint32_t x, std::uint32_t y) {
    return gpu_load_[x] < gpu_load_[y] || (gpu_load_[x] == gpu_load_[y] && x < y);
  });
  for (std::uint32_t g : by_load_) {
    const double lg = gpu_load_[g];
    if ((lh + lg) / 2 >= best) break;
    if (g == h) continue;
    std::uint32_t* gi = gpu_items(g);
    for (std::uint32_t i = 0; i < spg_; ++i) {
      const std::uint32_t a = hi[i];
      if (strict_ && on(g, a) != 0) continue;
      const double wa = per_copy_[a];
      for (std::uint32_t j = 0; j < spg_; ++j) {
        const std::uint32_t b = gi[j];
        const double d = wa - per_copy_[b];
        if (d <= 0 || b == a || (strict_ && on(h, b) != 0)) continue;
        const double m = std::max(lh - d, lg + d);
        if (m < best) {
          best = m;
          bg = g;
          bi = i;
          bj = j;
        }
      }
    }
  }
  if (bg == gpus_) return false;
  std::uint32_t* gi = gpu_items(bg);
  const std::uint32_t a = hi[bi], b = gi[bj];
  const double d = per_copy_[a] - per_copy_[b];
  hi[bi] = b;
  gi[bj] = a;
  --on(h, a);
  ++on(h, b);
  --on(bg, b);
  ++on(bg, a);
  gpu_load_[h] -= d;
  gpu_load_[bg] += d;
  return true;
}

// The best move of one copy from expert b (>= 2 copies) to expert a, where the freed slot is on GPU g,
// among moves touching the heaviest GPU h: a on h (b anywhere), or g == h (a among the few experts whose
// extra copy would be lightest). Accepted when the heaviest load drops, or stays and the sum of squared
// loads drops. A move changes only the GPUs holding a or b, so each is weighed in time linear in those.
bool domain_search::try_resplit(std::uint32_t h) {
  // Where each expert's copies are (a GPU twice for a stacked pair), and the GPUs by falling load.
  holder_start_.assign(experts_ + 1, 0);
  for (std::uint32_t e = 0; e < experts_; ++e) holder_start_[e + 1] = holder_start_[e] + count_[e];
  holders_.resize(items_.size());
  std::vector<std::uint32_t>& next = scratch_;
  next.assign(holder_start_.begin(), holder_start_.end() - 1);
  for (std::uint32_t g = 0; g < gpus_; ++g)
    for (std::uint32_t i = 0; i < spg_; ++i) holders_[next[gpu_items(g)[i]]++] = g;
  by_load_.resize(gpus_);
  std::iota(by_load_.begin(), by_load_.end(), 0u);
  std::sort(by_load_.begin(), by_load_.end(), [this](std::uint32_t x, std::uint32_t y) {
    return gpu_load_[x] > gpu_load_[y] || (gpu_load_[x] == gpu_load_[y] && x < y);
  });
  stamp_.resize(gpus_, 0);

  const double cur_max = gpu_load_[by_load_[0]];
  double cur_sq = 0;
  for (double l : gpu_load_) cur_sq += l * l;
  const double tol_max = rel_eps * cur_max, tol_sq = rel_eps * cur_sq;
  double best_max = 0, best_sq = 0;
  bool found = false;
  std::uint32_t ba = 0, bb = 0, bgpu = 0;

  auto evaluate = [&](std::uint32_t a, std::uint32_t b, std::uint32_t g) {
    const double wa2 = load_[a] / (count_[a] + 1), wb2 = load_[b] / (count_[b] - 1);
    const double da = wa2 - per_copy_[a], db = wb2 - per_copy_[b];
    ++tick_;
    double m = 0, dsq = 0;
    auto touch = [&](std::uint32_t k) {
      if (stamp_[k] == tick_) return;
      stamp_[k] = tick_;
      double l = gpu_load_[k] + on(k, a) * da + on(k, b) * db;
      if (k == g) l += wa2 - wb2;
      m = std::max(m, l);
      dsq += l * l - gpu_load_[k] * gpu_load_[k];
    };
    touch(g);
    for (std::uint32_t i = holder_start_[a]; i < holder_start_[a + 1]; ++i) touch(holders_[i]);
    for (std::uint32_t i = holder_start_[b]; i < holder_start_[b + 1]; ++i) touch(holders_[i]);
    for (std::uint32_t k : by_load_)  // the heaviest GPU the move leaves alone
      if (stamp_[k] != tick_) {
        m = std::max(m, gpu_load_[k]);
        break;
      }
    const double sq = cur_sq + dsq;
    const bool acceptable = m < cur_max - tol_max || (m <= cur_max && sq < cur_sq - tol_sq);
    if (acceptable && (!found || m < best_max || (m == best_max && sq < best_sq))) {
      best_max = m;
      best_sq = sq;
      found = true;
      ba = a;
      bb = b;
      bgpu = g;
    }
  };

  std::uint32_t* hi = gpu_items(h);
  // a on h gains a copy, taken from a copy of b on some GPU g that does not hold a.
  for (std::uint32_t i = 0; i < spg_; ++i) {
    const std::uint32_t a = hi[i];
    if (count_[a] >= cap_) continue;
    for (std::uint32_t b = 0; b < experts_; ++b) {
      if (b == a || count_[b] < 2) continue;
      for (std::uint32_t j = holder_start_[b]; j < holder_start_[b + 1]; ++j) {
        const std::uint32_t g = holders_[j];
        if (!(strict_ && on(g, a) != 0)) evaluate(a, b, g);
      }
    }
  }
  // b on h gives up its copy there to an expert a not on h whose extra copy is among the lightest.
  constexpr std::size_t lightest = 4;
  std::vector<std::uint32_t>& takers = scratch_;
  takers.clear();
  for (std::uint32_t a = 0; a < experts_; ++a) {
    if (count_[a] >= cap_ || (strict_ && on(h, a) != 0)) continue;
    takers.push_back(a);
  }
  auto lighter_copy = [this](std::uint32_t x, std::uint32_t y) {
    const double wx = load_[x] / (count_[x] + 1), wy = load_[y] / (count_[y] + 1);
    return wx < wy || (wx == wy && x < y);
  };
  if (takers.size() > lightest) {
    std::partial_sort(takers.begin(), takers.begin() + lightest, takers.end(), lighter_copy);
    takers.resize(lightest);
  }
  for (std::uint32_t i = 0; i < spg_; ++i) {
    const std::uint32_t b = hi[i];
    if (count_[b] < 2) continue;
    for (std::uint32_t a : takers)
      if (a != b) evaluate(a, b, h);
  }
  if (!found) return false;

  std::uint32_t* gi = gpu_items(bgpu);
  for (std::uint32_t j = 0; j < spg_; ++j)
    if (gi[j] == bb) {
      gi[j] = ba;
      break;
    }
  --on(bgpu, bb);
  ++on(bgpu, ba);
  ++count_[ba];
  --count_[bb];
  per_copy_[ba] = load_[ba] / count_[ba];
  per_copy_[bb] = load_[bb] / count_[bb];
  recompute_loads();
  return true;
}

void domain_search::recompute_loads() {
  for (std::uint32_t g = 0; g < gpus_; ++g) {
    double l = 0;
    for (std::uint32_t i = 0; i < spg_; ++i) l += per_copy_[gpu_items(g)[i]];
    gpu_load_[g] = l;
  }
}

void domain_search::improve() {
  if (gpus_ < 2) return;
  // Work bounds, in candidate moves looked at, keep very large domains from searching for long.
  const std::size_t swap_work = std::size_t{gpus_} * spg_ * spg_;
  const std::size_t resplit_work = std::size_t{spg_} * (items_.size() + experts_) * gpus_;
  std::size_t work = 0;
  for (std::size_t step = 0; step < 64 * std::size_t{gpus_} + 64 && work < work_budget; ++step) {
    const std::uint32_t h = heaviest();
    work += swap_work;
    if (try_swap(h)) continue;
    work += resplit_work;
    if (!try_resplit(h)) break;
  }
  recompute_loads();
}

domain_plan domain_search::result() const {
  domain_plan p;
  p.slots = items_;
  p.counts = count_;
  measure_domain(load_, p.slots, p.counts, gpus_, p.max_load, p.sum_sq);
  return p;
}

}  // namespace

void measure_domain(std::span<const double> load, std::span<const std::uint32_t> slots,
                    std::span<const std::uint32_t> counts, std::uint32_t gpus, double& max_load,
                    double& sum_sq) {
  const std::size_t spg = slots.size() / gpus;
  max_load = 0;
  sum_sq = 0;
  for (std::size_t g = 0; g < gpus; ++g) {
    double l = 0;
    for (std::size_t i = 0; i < spg; ++i) {
      const std::uint32_t e = slots[g * spg + i];
      l += load[e] / counts[e];
    }
    max_load = std::max(max_load, l);
    sum_sq += l * l;
  }
}

domain_plan plan_domain_with_counts(std::span<const double> load, std::uint32_t gpus,
                                    std::uint32_t slots_per_gpu, std::vector<std::uint32_t> counts) {
  domain_search s(load, gpus, slots_per_gpu, false);
  s.set_counts(std::move(counts));
  s.pack(true);
  s.improve();
  return s.result();
}

domain_plan plan_domain_to_target(std::span<const double> load, std::uint32_t gpus,
                                  std::uint32_t slots_per_gpu, double target) {
  domain_search s(load, gpus, slots_per_gpu, false);
  s.pack_to_target(target);
  s.improve();
  return s.result();
}

domain_plan plan_domain(std::span<const double> load, std::uint32_t gpus, std::uint32_t slots_per_gpu) {
  auto better = [](const domain_plan& x, const domain_plan& y) {
    return x.max_load < y.max_load || (x.max_load == y.max_load && x.sum_sq < y.sum_sq);
  };
  const std::uint32_t cap = load.size() >= slots_per_gpu ? gpus : std::numeric_limits<std::uint32_t>::max();
  auto by_copy = counts_by_load_per_copy(load, std::size_t{gpus} * slots_per_gpu, cap);
  auto by_bound = counts_by_packing_bound(load, gpus, slots_per_gpu, cap);
  const bool same = by_copy == by_bound;
  domain_plan best = plan_domain_with_counts(load, gpus, slots_per_gpu, std::move(by_copy));
  if (!same) {
    domain_plan other = plan_domain_with_counts(load, gpus, slots_per_gpu, std::move(by_bound));
    if (better(other, best)) best = std::move(other);
  }
  if (gpus > 1) {
    const double mean = std::accumulate(load.begin(), load.end(), 0.0) / gpus;
    for (double f : {0.0, 0.5}) {
      domain_plan other = plan_domain_to_target(load, gpus, slots_per_gpu, mean + f * (best.max_load - mean));
      if (better(other, best)) best = std::move(other);
    }
  }
  return best;
}

domain_plan plan_domain_plain(std::span<const double> load, std::uint32_t gpus, std::uint32_t slots_per_gpu) {
  domain_search s(load, gpus, slots_per_gpu, true);
  s.set_counts(counts_by_load_per_copy(load, std::size_t{gpus} * slots_per_gpu, s.cap()));
  s.pack(false);
  return s.result();
}

domain_plan improve_stacked(std::span<const double> load, std::uint32_t gpus, std::uint32_t slots_per_gpu,
                            const domain_plan& start) {
  domain_search s(load, gpus, slots_per_gpu, true);
  s.adopt(start);
  s.improve();
  domain_plan out = s.result();
  return out.max_load <= start.max_load ? out : start;
}

}  // namespace loom::placement::detail
