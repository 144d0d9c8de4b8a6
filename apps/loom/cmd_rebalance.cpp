// `loom rebalance`: plan redundant-expert placements for the layers of an expert-load file.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "apps/loom/commands.hpp"
#include "runtime/placement/case_file.hpp"
#include "runtime/placement/planner.hpp"

namespace loom::app {

namespace {

std::string fixed(double v, int digits = 4) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

void print_text(const placement::load_case& c, const std::vector<placement::layer_plan>& plans) {
  const auto& t = c.topo;
  std::cout << c.origin << ": " << plans.size() << " layers, " << c.num_experts() << " experts, "
            << t.num_slots << " slots, " << t.num_groups << " groups, " << t.num_nodes << " nodes, "
            << t.num_gpus << " GPUs ("
            << (t.hierarchical() ? "hierarchical: each group stays on one node"
                                 : "global: groups do not divide by nodes")
            << ")\n";
  const std::size_t spg = t.slots_per_gpu(), gpn = t.gpus_per_node();
  double sum = 0, worst = 0, anchor_sum = 0, anchor_worst = 0;
  for (std::size_t l = 0; l < plans.size(); ++l) {
    const auto& p = plans[l];
    std::cout << "layer " << l << ": imbalance " << fixed(p.imbalance);
    if (!c.anchor_imbalance.empty()) {
      std::cout << " (anchor " << fixed(c.anchor_imbalance[l]) << ")";
      anchor_sum += c.anchor_imbalance[l];
      anchor_worst = std::max(anchor_worst, c.anchor_imbalance[l]);
    }
    if (p.stacked) std::cout << "; some GPU holds an expert twice (the plain plan that does so was better)";
    std::cout << "\n";
    sum += p.imbalance;
    worst = std::max(worst, p.imbalance);
    for (std::size_t g = 0; g < t.num_gpus; ++g) {
      std::cout << "  node " << g / gpn << " gpu " << g << ":";
      for (std::size_t s = g * spg; s < (g + 1) * spg; ++s) std::cout << " " << p.phy2log[s];
      std::cout << "\n";
    }
  }
  std::cout << "imbalance over " << plans.size() << " layers: mean " << fixed(sum / plans.size()) << ", max "
            << fixed(worst);
  if (!c.anchor_imbalance.empty())
    std::cout << " (anchor: mean " << fixed(anchor_sum / plans.size()) << ", max " << fixed(anchor_worst)
              << ")";
  std::cout << "\n";
}

// One JSON object; each layer on a line of its own so that long placements stay readable.
void print_json(const placement::load_case& c, const std::vector<placement::layer_plan>& plans) {
  nlohmann::json head;
  head["file"] = c.origin;
  head["num_replicas"] = c.topo.num_slots;
  head["num_groups"] = c.topo.num_groups;
  head["num_nodes"] = c.topo.num_nodes;
  head["num_gpus"] = c.topo.num_gpus;
  head["hierarchical"] = c.topo.hierarchical();
  std::string text = head.dump();
  text.pop_back();  // the closing brace: the layers follow
  text += ",\n \"layers\": [";
  for (std::size_t l = 0; l < plans.size(); ++l) {
    nlohmann::json layer;
    layer["layer"] = l;
    layer["imbalance"] = plans[l].imbalance;
    if (!c.anchor_imbalance.empty()) layer["anchor_imbalance"] = c.anchor_imbalance[l];
    layer["stacked"] = plans[l].stacked;
    layer["phy2log"] = plans[l].phy2log;
    layer["replica_counts"] = plans[l].replica_counts;
    text += (l == 0 ? "\n  " : ",\n  ") + layer.dump();
  }
  text += "\n ]}\n";
  std::cout << text;
}

}  // namespace

void add_rebalance_command(CLI::App& app, action& selected) {
  auto* cmd = app.add_subcommand(
      "rebalance", "Plan which expert each GPU slot holds (redundant experts) from per-layer expert loads");
  cmd->footer(
      "The loads file is JSON:\n"
      "  {\"num_replicas\": SLOTS, \"num_groups\": G, \"num_nodes\": N, \"num_gpus\": P,\n"
      "   \"load\": [[load of each expert], ... one list per layer]}\n"
      "optionally with the anchor planner's \"anchor_phy2log\" and \"anchor_imbalance\" per layer.\n"
      "Imbalance = heaviest GPU load / mean GPU load, a copy carrying its expert's load / copies.\n"
      "When num_groups divides by num_nodes, each group of experts stays on one node.\n"
      "Prints each layer's placement grouped per GPU (slots GPU after GPU) and its imbalance.\n"
      "Exit status: 0 planned, 1 the file is missing, unreadable or malformed, 2 usage error.\n");
  auto loads = std::make_shared<std::string>();
  auto as_json = std::make_shared<bool>(false);
  cmd->add_option("--loads", *loads, "Expert-load file (JSON, the format of shared/cases/eplb/*.json)")
      ->required()
      ->type_name("FILE.json");
  cmd->add_flag("--json", *as_json,
                "Print a JSON object with each layer's phy2log, replica counts and imbalance");
  cmd->callback([&selected, loads, as_json] {
    selected = [loads, as_json] {
      auto c = placement::load_case_file(*loads);
      if (!c) {
        std::cerr << "loom rebalance: " << c.error().message << "\n";
        return 1;
      }
      auto plans = placement::plan_layers(c->load, c->topo);
      if (!plans) {
        std::cerr << "loom rebalance: " << c->origin << ": " << plans.error().message << "\n";
        return 1;
      }
      if (*as_json)
        print_json(*c, *plans);
      else
        print_text(*c, *plans);
      return 0;
    };
  });
}

}  // namespace loom::app
