// Redundant experts during training: the placement of each layer's experts on the physical slots of
// an expert-parallel group, planned at the start and re-planned every `replan_every` steps from the
// measured load (a moving average over `window` steps), with the planner of runtime/placement.
#pragma once

#include <deque>
#include <string>
#include <vector>

#include "actors/messages.hpp"
#include "kernels/model/config.hpp"
#include "support/expected.hpp"

namespace loom::exec {

struct expert_policy_config {
  int redundant = 0;       // extra physical slots per layer (copies of hot experts)
  int replan_every = 0;    // steps between re-plans; 0: plan once, at the start
  int window = 1;          // steps of load the re-plan averages
  std::string planner = "hierarchical";  // or "global"
  int groups = 1;          // expert groups (kept on one node by the hierarchical planner)
  bool enabled() const { return redundant > 0 || replan_every > 0; }
};

struct replan_record {
  int step = 0;                        // after which step
  std::vector<double> before, after;   // per layer: heaviest rank / mean rank load under the window's load
};

class expert_balancer {
 public:
  expert_balancer(expert_policy_config policy, int layers, int experts, int ep);

  // Checks the policy against the model and plans the first placement (from a uniform load).
  expected<std::vector<model::slot_map>> initial();

  // After each step: the layers to re-place (when the interval says so) and their new placements.
  actors::migrate_request after_step(int step, const std::vector<double>& load);

  const std::vector<replan_record>& history() const { return history_; }
  const expert_policy_config& policy() const { return policy_; }

 private:
  expected<std::vector<int>> plan(const std::vector<double>& load) const;

  expert_policy_config policy_;
  int layers_, experts_, ep_;
  std::vector<std::vector<int>> current_;  // phy2log per layer
  std::deque<std::vector<double>> window_; // recent steps' load [layer][expert]
  std::vector<replan_record> history_;
};

}  // namespace loom::exec
