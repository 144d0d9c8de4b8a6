#include "runtime/exec/overlap_measure.hpp"

#include <algorithm>
#include <utility>
#include <vector>

namespace loom::exec {

namespace {

using interval = std::pair<std::int64_t, std::int64_t>;

double ms(std::int64_t ns) { return static_cast<double>(ns) * 1e-6; }

// Sorted, disjoint intervals covering the same time as `iv`.
std::vector<interval> merged(std::vector<interval> iv) {
  std::sort(iv.begin(), iv.end());
  std::vector<interval> out;
  for (auto [a, b] : iv) {
    if (b <= a) continue;
    if (!out.empty() && a <= out.back().second) out.back().second = std::max(out.back().second, b);
    else out.push_back({a, b});
  }
  return out;
}

// How much of [a, b) the disjoint, sorted `cover` covers.
std::int64_t covered(const std::vector<interval>& cover, std::int64_t a, std::int64_t b) {
  if (b <= a) return 0;
  auto it = std::upper_bound(cover.begin(), cover.end(), interval{a, INT64_MAX});
  if (it != cover.begin()) --it;
  std::int64_t total = 0;
  for (; it != cover.end() && it->first < b; ++it) total += std::max<std::int64_t>(0, std::min(b, it->second) - std::max(a, it->first));
  return total;
}

}  // namespace

comm_overlap measure_overlap(const schedule::schedule& s, const run_result& r, int step) {
  comm_overlap m;
  if (step < 0 || step >= static_cast<int>(r.outcome.steps.size())) return m;
  const auto& so = r.outcome.steps[step];
  for (std::size_t g = 0; g < so.ranks.size(); ++g) {
    const int rank = static_cast<int>(g) / r.ep;
    const auto& prog = r.lowered.ranks[rank];
    std::vector<interval> compute;
    for (const auto& t : so.ranks[g].ops) {
      const auto kind = prog.ops[t.index].kind;
      if (kind != actors::op_kind::send && kind != actors::op_kind::recv && !actors::is_comm(kind)) compute.push_back({t.start_ns, t.end_ns});
    }
    compute = merged(std::move(compute));
    std::vector<char> in_pair(prog.action_ops.size(), 0);
    for (std::size_t a = 0; a < in_pair.size() && a < s.programs[rank].size(); ++a) {
      in_pair[a] = s.programs[rank][a].second.has_value();
      m.pairs += in_pair[a] ? 1 : 0;
    }
    for (const auto& t : so.ranks[g].ops) {
      const auto& po = prog.ops[t.index];
      if (!actors::is_comm(po.kind)) continue;
      const bool waited = t.wait_end_ns > t.wait_start_ns && t.wait_start_ns >= t.start_ns && t.wait_end_ns <= t.end_ns;
      const std::int64_t wait = waited ? t.wait_end_ns - t.wait_start_ns : 0;
      const std::int64_t busy = t.end_ns - t.start_ns - wait;
      const std::int64_t hidden = waited ? covered(compute, t.start_ns, t.wait_start_ns) + covered(compute, t.wait_end_ns, t.end_ns)
                                         : covered(compute, t.start_ns, t.end_ns);
      m.busy_ms += ms(busy);
      m.wait_ms += ms(wait);
      m.hidden_ms += ms(hidden);
      if (po.action >= 0 && po.action < static_cast<int>(in_pair.size()) && in_pair[po.action]) {
        m.pair_busy_ms += ms(busy);
        m.pair_wait_ms += ms(wait);
        m.pair_hidden_ms += ms(hidden);
        m.pair_span_hidden_ms += ms(covered(compute, t.start_ns, t.end_ns));
      }
    }
  }
  return m;
}

}  // namespace loom::exec
