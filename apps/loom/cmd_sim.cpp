// `loom sim FILE [--set NAME=VALUE]... [--cost F=1,B=2,W=1,FB=3] [--components ...] [--json]`:
// the predicted timeline of a schedule: makespan, idle time and bubble per rank, peak activations,
// and at the component level the share of communication hidden under computation.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "apps/loom/commands.hpp"
#include "apps/loom/schedule_options.hpp"
#include "runtime/schedule/schedule.hpp"
#include "runtime/sim/action_sim.hpp"
#include "runtime/sim/component_sim.hpp"

namespace loom::app {

namespace {

struct sim_options {
  schedule_options schedule;
  std::string cost = "F=1,B=2,W=1,FB=3";
  std::string components;  // empty: action level
  bool json = false;
};

std::string fixed(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

int run_sim(const sim_options& o) {
  auto loaded = o.schedule.load();
  if (!loaded) return 1;
  const auto& s = loaded->sched;
  sim::action_timeline t;
  nlohmann::json extra;
  std::string level;
  if (o.components.empty()) {
    auto costs = sim::parse_action_costs(o.cost);
    if (!costs) {
      print_error(costs.error());
      return 2;
    }
    t = sim::simulate_actions(s, *costs);
    level = "action";
    extra["costs"] = {{"F", costs->F}, {"B", costs->B}, {"W", costs->W}, {"FB", costs->FB}, {"FF", costs->pair_of_forwards()}};
  } else {
    auto costs = sim::parse_component_costs(o.components);
    if (!costs) {
      print_error(costs.error());
      return 2;
    }
    auto result = sim::simulate_components(s, *costs);
    t = result.actions;
    level = "component";
    extra["comm_time"] = result.comm_time;
    extra["comm_hidden"] = result.comm_hidden;
    extra["comm_hidden_fraction"] = result.hidden_fraction();
  }
  std::vector<int> copies;
  for (int st = 0; st < schedule::logical_stages(s); ++st) copies.push_back(schedule::stage_copies(s, st));

  if (o.json) {
    nlohmann::json j{{"schedule", s.name},
                     {"params", s.params},
                     {"level", level},
                     {"ranks", s.ranks()},
                     {"microbatches", s.total_microbatches()},
                     {"makespan", t.makespan},
                     {"idle", t.idle},
                     {"busy", t.busy},
                     {"bubble_ratio", t.bubble_ratio},
                     {"peak_activations", t.peak_activations},
                     {"peak_deferred_weights", t.peak_deferred_weights},
                     {"parameter_copies", copies}};
    j.update(extra);
    std::cout << j.dump(1) << "\n";
    return 0;
  }
  std::cout << s.name << ": " << s.ranks() << " ranks, " << s.total_microbatches() << " microbatches (" << level
            << " level)\n";
  std::cout << "makespan " << fixed(t.makespan) << ", bubble ratio " << fixed(t.bubble_ratio) << "\n";
  if (extra.contains("comm_hidden_fraction"))
    std::cout << "communication " << fixed(extra["comm_time"].get<double>()) << ", of which "
              << fixed(100 * extra["comm_hidden_fraction"].get<double>()) << "% hidden under computation\n";
  std::cout << "rank  busy        idle        peak activations  deferred W\n";
  for (int r = 0; r < s.ranks(); ++r) {
    char line[128];
    std::snprintf(line, sizeof line, "%-5d %-11s %-11s %-17d %d\n", r, fixed(t.busy[r]).c_str(), fixed(t.idle[r]).c_str(),
                  t.peak_activations[r], t.peak_deferred_weights[r]);
    std::cout << line;
  }
  int max_copies = copies.empty() ? 0 : *std::max_element(copies.begin(), copies.end());
  std::cout << "parameter copies per stage: " << max_copies << "\n";
  return 0;
}

}  // namespace

void add_sim_command(CLI::App& app, action& selected) {
  auto* cmd = app.add_subcommand("sim", "Predict a schedule's timeline: makespan, bubble, idle time and memory per rank");
  auto o = std::make_shared<sim_options>();
  o->schedule.add_to(*cmd);
  cmd->add_option("--cost", o->cost, "Action costs (action level), e.g. F=1,B=2,W=1,FB=3 (I costs B-W)")->capture_default_str();
  cmd->add_option("--components", o->components,
                  "Component costs per layer for the component-level simulator, e.g. "
                  "attn=1,mlp=1,dispatch=0.3,combine=0.3,attn.b=1,attn.w=1,mlp.b=1,mlp.w=1,dispatch.b=0.3,combine.b=0.3,p2p=0.1,layers=2");
  cmd->add_flag("--json", o->json, "Print JSON: makespan, idle and busy per rank, bubble_ratio, peak_activations, ...");
  cmd->callback([&selected, o] { selected = [o] { return run_sim(*o); }; });
}

}  // namespace loom::app
