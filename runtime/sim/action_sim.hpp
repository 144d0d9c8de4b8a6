// The action-level simulator (the semantics of DESIGN.md): each rank runs its actions in order,
// one at a time; an action starts when the rank is free and its inputs exist. F of stage s needs F
// of stage s-1 (same pipeline and microbatch); B or I of stage s needs F of stage s and the gradient
// from stage s+1; W needs its I. Costs are per kind: I costs B - W, an F&B pair costs FB, an F&I pair
// FB - W, an F&F pair FF (2F unless given). Links have zero latency. Idle time = makespan - busy time.
#pragma once

#include <string_view>
#include <vector>

#include "runtime/schedule/schedule.hpp"
#include "support/expected.hpp"

namespace loom::sim {

struct action_costs {
  double F = 1, B = 2, W = 1, FB = 3;
  double FF = -1;  // an F&F pair; negative: 2 * F
  double pair_of_forwards() const { return FF < 0 ? 2 * F : FF; }
};

// "F=1,B=2,W=1,FB=3[,FF=2]"; keys may come in any order and be left out (they keep their defaults).
expected<action_costs> parse_action_costs(std::string_view text, action_costs base = {});

struct span {
  double start = 0, end = 0;
};

struct action_timeline {
  double makespan = 0;
  std::vector<double> busy;                 // per rank
  std::vector<double> idle;                 // per rank: makespan - busy
  std::vector<std::vector<span>> spans;     // [rank][action]
  std::vector<int> peak_activations;        // per rank: microbatch-chunks alive between F and B/I
  std::vector<int> peak_deferred_weights;   // per rank: I done, W not yet
  double bubble_ratio = 0;                  // sum of idle / (ranks * makespan)
};

// The cost of one action under these costs.
double action_cost(const schedule::action& a, const action_costs& c);

// Requires a validated schedule (loom::schedule::validate).
action_timeline simulate_actions(const schedule::schedule& s, const action_costs& costs);

}  // namespace loom::sim
