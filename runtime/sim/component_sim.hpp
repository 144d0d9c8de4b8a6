// The component-level simulator: each action expands into the components of its chunk's layers
// (attention, dispatch, MLP, combine, and their backward parts) on two in-order streams per rank,
// compute and comm, as a GPU runs them.
//
// - A forward layer runs attn -> dispatch -> mlp -> combine; a backward layer combine -> mlp ->
//   [mlp.w] -> dispatch -> attn -> [attn.w] (weight parts only in a full B; W runs them for an I).
// - Overlapped pairs interleave their two chunks layer by layer in the order of the schedule's
//   recipe (DeepSeek-V3's when it names none); other actions queue their components in order.
// - An action starts once its pipeline inputs have arrived; its outputs are sent when it completes,
//   taking `p2p` time on the sender's link.
// - Communication components and pipeline sends of a rank share its link: n transfers at once each
//   progress at 1/n of the rate. While a communication kernel runs, compute kernels of that rank
//   progress at (sms_total - sms) / sms_total of their rate, sms being the recipe's comm budget.
// With every communication cost zero the result equals the action-level simulator's with
// F = layers * (attn + mlp), B = layers * (attn.b + attn.w + mlp.b + mlp.w), W = layers * (attn.w +
// mlp.w) and FB = F + B (see implied_action_costs).
#pragma once

#include <string_view>
#include <vector>

#include "runtime/report/timeline.hpp"
#include "runtime/schedule/schedule.hpp"
#include "runtime/sim/action_sim.hpp"
#include "support/expected.hpp"

namespace loom::sim {

// Cost of each component for one layer and one microbatch, in time units.
struct component_costs {
  double attn = 1, dispatch = 0, mlp = 1, combine = 0;                  // forward
  double attn_b = 1, attn_w = 1, mlp_b = 1, mlp_w = 1;                  // backward compute
  double dispatch_b = 0, combine_b = 0;                                 // backward communication
  double p2p = 0;        // one pipeline send (activation or gradient) at the full link rate
  int layers = 1;        // layers per chunk
  int sms_total = 132;   // SMs of the device
  int comm_sms = 20;     // SMs a communication kernel takes outside a recipe
};

// "attn=1,dispatch=0.4,...,layers=2"; names as in the struct, with .b/.w written attn.b, attn.w,
// mlp.b, mlp.w, dispatch.b, combine.b.
expected<component_costs> parse_component_costs(std::string_view text, component_costs base = {});

// The action-level costs these component costs amount to when communication is free.
action_costs implied_action_costs(const component_costs& c);

struct component_result {
  action_timeline actions;        // per-action spans: from the first component's start to the last's end
  report::timeline picture;       // the same, with component spans, for plotting
  double comm_time = 0;           // total time communication kernels ran (all ranks)
  double comm_hidden = 0;         // of which, time a compute kernel ran at the same time on that rank
  double hidden_fraction() const { return comm_time > 0 ? comm_hidden / comm_time : 1.0; }
};

// Requires a validated schedule.
component_result simulate_components(const schedule::schedule& s, const component_costs& costs);

}  // namespace loom::sim
