#include "runtime/sim/action_sim.hpp"

#include <algorithm>
#include <charconv>
#include <deque>
#include <string>

#include "runtime/schedule/dataflow.hpp"

namespace loom::sim {

using schedule::phase;

expected<action_costs> parse_action_costs(std::string_view text, action_costs c) {
  while (!text.empty()) {
    auto comma = text.find(',');
    std::string_view item = text.substr(0, comma);
    text = comma == std::string_view::npos ? std::string_view{} : text.substr(comma + 1);
    auto eq = item.find('=');
    if (eq == std::string_view::npos)
      return unexpected(errc::invalid_argument, "cost '" + std::string(item) + "' is not KIND=VALUE (e.g. F=1,B=2,W=1,FB=3)");
    std::string key(item.substr(0, eq));
    std::string value(item.substr(eq + 1));
    double v = 0;
    auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
    if (ec != std::errc() || ptr != value.data() + value.size() || !(v >= 0) || v > 1e12)
      return unexpected(errc::invalid_argument, "cost " + key + "='" + value + "' is not a non-negative number");
    if (key == "F") c.F = v;
    else if (key == "B") c.B = v;
    else if (key == "W") c.W = v;
    else if (key == "FB") c.FB = v;
    else if (key == "FF") c.FF = v;
    else return unexpected(errc::invalid_argument, "unknown cost kind '" + key + "' (expected F, B, W, FB or FF)");
  }
  if (c.W > c.B) return unexpected(errc::invalid_argument, "W cannot cost more than B (I costs B - W)");
  return c;
}

double action_cost(const schedule::action& a, const action_costs& c) {
  if (a.second) {
    if (a.second->kind == phase::F) return c.pair_of_forwards();
    return a.second->kind == phase::I ? c.FB - c.W : c.FB;
  }
  switch (a.first.kind) {
    case phase::F: return c.F;
    case phase::B: return c.B;
    case phase::I: return c.B - c.W;
    case phase::W: return c.W;
  }
  return 0;
}

action_timeline simulate_actions(const schedule::schedule& s, const action_costs& costs) {
  const int R = s.ranks();
  schedule::step_table table(s);
  action_timeline t;
  t.busy.assign(R, 0);
  t.idle.assign(R, 0);
  t.spans.resize(R);
  for (int r = 0; r < R; ++r) t.spans[r].assign(s.programs[r].size(), {-1, -1});

  std::vector<int> next(R, 0);
  std::vector<double> free_at(R, 0);
  std::vector<std::vector<int>> waiters(R);
  std::deque<int> work;
  for (int r = 0; r < R; ++r) work.push_back(r);

  // The time an action's inputs exist, or -1 while a producer has not run yet (and who it is).
  auto inputs_ready = [&](int r, const schedule::action& a, int& blocker) {
    double ready = 0;
    auto need = [&](const schedule::step& st) {
      auto from = table.input_producer(r, st);
      if (!from.found()) return true;
      const span& sp = t.spans[from.rank][from.index];
      if (sp.end < 0) {
        blocker = from.rank;
        return false;
      }
      ready = std::max(ready, sp.end);
      return true;
    };
    if (!need(a.first)) return -1.0;
    if (a.second && !need(*a.second)) return -1.0;
    return ready;
  };

  while (!work.empty()) {
    int r = work.front();
    work.pop_front();
    const auto& prog = s.programs[r];
    bool moved = false;
    while (next[r] < static_cast<int>(prog.size())) {
      const auto& a = prog[next[r]];
      int blocker = -1;
      double ready = inputs_ready(r, a, blocker);
      if (ready < 0) {
        waiters[blocker].push_back(r);
        break;
      }
      double start = std::max(ready, free_at[r]);
      double cost = action_cost(a, costs);
      t.spans[r][next[r]] = {start, start + cost};
      free_at[r] = start + cost;
      t.busy[r] += cost;
      ++next[r];
      moved = true;
    }
    if (moved) {
      for (int w : waiters[r]) work.push_back(w);
      waiters[r].clear();
    }
  }

  for (int r = 0; r < R; ++r) t.makespan = std::max(t.makespan, free_at[r]);
  double idle_sum = 0;
  t.peak_activations.assign(R, 0);
  t.peak_deferred_weights.assign(R, 0);
  for (int r = 0; r < R; ++r) {
    t.idle[r] = t.makespan - t.busy[r];
    idle_sum += t.idle[r];
    int live = 0, deferred = 0;
    for (const auto& a : s.programs[r]) {
      auto on_start = [&](const schedule::step& st) {
        if (st.kind == phase::F) ++live;
      };
      auto on_end = [&](const schedule::step& st) {
        if (st.kind == phase::B || st.kind == phase::I) --live;
        if (st.kind == phase::I) ++deferred;
        if (st.kind == phase::W) --deferred;
      };
      on_start(a.first);
      if (a.second) on_start(*a.second);
      t.peak_activations[r] = std::max(t.peak_activations[r], live);
      on_end(a.first);
      if (a.second) on_end(*a.second);
      t.peak_deferred_weights[r] = std::max(t.peak_deferred_weights[r], deferred);
    }
  }
  t.bubble_ratio = (R > 0 && t.makespan > 0) ? idle_sum / (R * t.makespan) : 0;
  return t;
}

}  // namespace loom::sim
