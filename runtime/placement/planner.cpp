// plan_layer / plan_layers: input checks, hierarchical or global planning, the assembled plan.
#include "runtime/placement/planner.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "runtime/placement/domain.hpp"
#include "runtime/placement/hierarchy.hpp"
#include "runtime/placement/node_assign.hpp"

namespace loom::placement {

namespace {

// Sizes past these would make the planner's per-(GPU, expert) tables or its search unreasonably large.
constexpr std::size_t max_slots = 1 << 14;
constexpr std::size_t max_gpus = 1 << 11;
constexpr std::size_t max_gpu_expert_cells = 1 << 22;

unexpected bad(std::string msg) { return unexpected(errc::invalid_argument, std::move(msg)); }

std::string str(std::size_t v) { return std::to_string(v); }

// A layer's plan while it is made: the experts of each domain (a node, or all GPUs) and its plan.
struct draft {
  std::vector<std::vector<std::size_t>> experts;  // per domain: domain-local -> logical expert
  std::vector<detail::domain_plan> plans;

  double max_load() const {
    double m = 0;
    for (const auto& p : plans) m = std::max(m, p.max_load);
    return m;
  }
};

std::uint32_t u32(std::size_t v) { return static_cast<std::uint32_t>(v); }

std::vector<double> loads_of(std::span<const double> load, const std::vector<std::size_t>& experts) {
  std::vector<double> out;
  out.reserve(experts.size());
  for (std::size_t e : experts) out.push_back(load[e]);
  return out;
}

// The domains: one per node holding `groups_of_node`, or all experts in one.
std::vector<std::vector<std::size_t>> domains(std::size_t experts, const topology& topo,
                                              const std::vector<std::vector<std::uint32_t>>& groups_of_node) {
  std::vector<std::vector<std::size_t>> out;
  if (groups_of_node.empty()) {
    out.emplace_back(experts);
    for (std::size_t e = 0; e < experts; ++e) out.back()[e] = e;
    return out;
  }
  const std::size_t per_group = experts / topo.num_groups;
  for (const auto& groups : groups_of_node) {
    auto& d = out.emplace_back();
    for (std::uint32_t grp : groups)
      for (std::size_t e = grp * per_group; e < (grp + 1) * per_group; ++e) d.push_back(e);
  }
  return out;
}

// The planner proper: no avoidable stacking of copies on a GPU.
draft plan_spread(std::span<const double> load, const topology& topo) {
  draft d;
  if (!topo.hierarchical()) {
    d.experts = domains(load.size(), topo, {});
    d.plans.push_back(detail::plan_domain(load, u32(topo.num_gpus), u32(topo.slots_per_gpu())));
    return d;
  }
  auto nodes = detail::plan_nodes(load, u32(topo.num_groups), u32(topo.num_nodes), u32(topo.gpus_per_node()),
                                  u32(topo.slots_per_gpu()));
  std::vector<std::vector<std::uint32_t>> groups_of_node;
  for (auto& n : nodes) {
    groups_of_node.push_back(n.groups);
    d.plans.push_back(std::move(n.plan));
  }
  d.experts = domains(load.size(), topo, groups_of_node);
  return d;
}

// The anchor's plain plan (groups spread evenly over nodes by the longest-processing-time rule, then
// detail::plan_domain_plain per node).
draft plan_plain(std::span<const double> load, const topology& topo) {
  draft d;
  std::vector<std::vector<std::uint32_t>> groups_of_node;
  if (topo.hierarchical()) {
    const std::size_t per_group = load.size() / topo.num_groups;
    std::vector<double> group_load(topo.num_groups, 0.0);
    for (std::size_t e = 0; e < load.size(); ++e) group_load[e / per_group] += load[e];
    const auto node_of = detail::even_assignment(group_load, u32(topo.num_nodes));
    groups_of_node.resize(topo.num_nodes);
    for (std::size_t grp = 0; grp < node_of.size(); ++grp) groups_of_node[node_of[grp]].push_back(u32(grp));
  }
  d.experts = domains(load.size(), topo, groups_of_node);
  const std::uint32_t gpus = u32(topo.hierarchical() ? topo.gpus_per_node() : topo.num_gpus);
  for (const auto& experts : d.experts)
    d.plans.push_back(detail::plan_domain_plain(loads_of(load, experts), gpus, u32(topo.slots_per_gpu())));
  return d;
}

layer_plan assemble(const draft& d, std::size_t experts, const topology& topo, bool stacked) {
  layer_plan out;
  out.phy2log.assign(topo.num_slots, 0);
  out.replica_counts.assign(experts, 0);
  const std::size_t domain_slots = topo.num_slots / d.plans.size();
  for (std::size_t i = 0; i < d.plans.size(); ++i) {
    const auto& dp = d.plans[i];
    for (std::size_t s = 0; s < dp.slots.size(); ++s)
      out.phy2log[i * domain_slots + s] = d.experts[i][dp.slots[s]];
    for (std::size_t e = 0; e < dp.counts.size(); ++e) out.replica_counts[d.experts[i][e]] = dp.counts[e];
  }
  out.hierarchical = topo.hierarchical();
  out.stacked = stacked;
  return out;
}

// The plan to return: the spread plan, unless the plain plan is better; then the plain plan after local
// search with stacking allowed (the one case where copies of an expert share a GPU avoidably).
layer_plan choose(std::span<const double> load, const topology& topo) {
  draft spread = plan_spread(load, topo);
  draft plain = plan_plain(load, topo);
  if (!(plain.max_load() < spread.max_load())) return assemble(spread, load.size(), topo, false);
  const std::uint32_t gpus = u32(topo.hierarchical() ? topo.gpus_per_node() : topo.num_gpus);
  for (std::size_t i = 0; i < plain.plans.size(); ++i)
    plain.plans[i] = detail::improve_stacked(loads_of(load, plain.experts[i]), gpus,
                                             u32(topo.slots_per_gpu()), plain.plans[i]);
  return assemble(plain, load.size(), topo, true);
}

// Checks the inputs, runs `make`, checks its result and measures it.
template <class Make>
expected<layer_plan> checked_plan(std::span<const double> load, const topology& topo, Make make) {
  if (auto ok = check_topology(load.size(), topo); !ok) return forward_error(ok);
  for (std::size_t e = 0; e < load.size(); ++e)
    if (!std::isfinite(load[e]) || load[e] < 0)
      return bad("the load of expert " + str(e) + " is " + std::to_string(load[e]) +
                 "; loads must be finite and >= 0");
  layer_plan plan = make();
  if (auto ok = validate(load.size(), plan.phy2log, topo, plan.replica_counts, plan.stacked); !ok)
    return unexpected(errc::internal, "the planner broke its own rules: " + ok.error().message);
  auto imb = imbalance(load, plan.phy2log, topo.num_gpus);
  if (!imb) return forward_error(imb);
  plan.imbalance = *imb;
  return plan;
}

}  // namespace

expected<void> check_topology(std::size_t num_experts, const topology& topo) {
  if (num_experts == 0) return bad("no experts: the load has no entries");
  if (topo.num_gpus == 0 || topo.num_nodes == 0 || topo.num_groups == 0 || topo.num_slots == 0)
    return bad("num_replicas (slots), num_groups, num_nodes and num_gpus must all be at least 1");
  if (topo.num_slots > max_slots || topo.num_gpus > max_gpus)
    return unexpected(errc::limit_exceeded, "at most " + str(max_slots) + " slots and " + str(max_gpus) +
                                                " GPUs are supported (got " + str(topo.num_slots) +
                                                " slots, " + str(topo.num_gpus) + " GPUs)");
  if (topo.num_slots % topo.num_gpus != 0)
    return bad("num_replicas (" + str(topo.num_slots) + ") is not divisible by num_gpus (" +
               str(topo.num_gpus) + "): every GPU must hold the same number of slots");
  if (topo.num_gpus % topo.num_nodes != 0)
    return bad("num_gpus (" + str(topo.num_gpus) + ") is not divisible by num_nodes (" + str(topo.num_nodes) +
               ")");
  if (num_experts % topo.num_groups != 0)
    return bad("the number of experts (" + str(num_experts) + ") is not divisible by num_groups (" +
               str(topo.num_groups) + ")");
  if (topo.num_slots < num_experts)
    return bad("num_replicas (" + str(topo.num_slots) + ") is smaller than the number of experts (" +
               str(num_experts) + "): every expert needs a slot");
  if (num_experts * topo.num_gpus > max_gpu_expert_cells)
    return unexpected(errc::limit_exceeded, "experts x GPUs (" + str(num_experts) + " x " +
                                                str(topo.num_gpus) + ") is above the supported " +
                                                str(max_gpu_expert_cells));
  if (topo.hierarchical()) {
    const std::size_t per_group = num_experts / topo.num_groups,
                      slots_per_node = topo.num_slots / topo.num_nodes;
    const std::size_t fit = slots_per_node / per_group;  // groups one node can hold
    if (fit * topo.num_nodes < topo.num_groups)
      return bad("a node has " + str(slots_per_node) + " slots, room for " + str(fit) + " groups of " +
                 str(per_group) + " experts; " + str(topo.num_nodes) + " nodes cannot hold " +
                 str(topo.num_groups) + " groups");
  }
  return {};
}

expected<layer_plan> plan_layer(std::span<const double> load, const topology& topo) {
  return checked_plan(load, topo, [&] { return choose(load, topo); });
}

expected<layer_plan> plan_layer_plain(std::span<const double> load, const topology& topo) {
  return checked_plan(load, topo, [&] { return assemble(plan_plain(load, topo), load.size(), topo, true); });
}

expected<std::vector<layer_plan>> plan_layers(const std::vector<std::vector<double>>& loads,
                                              const topology& topo) {
  std::vector<layer_plan> out;
  out.reserve(loads.size());
  for (std::size_t layer = 0; layer < loads.size(); ++layer) {
    if (!loads.empty() && loads[layer].size() != loads[0].size())
      return bad("layer " + str(layer) + " has " + str(loads[layer].size()) + " experts, layer 0 has " +
                 str(loads[0].size()));
    auto plan = plan_layer(loads[layer], topo);
    if (!plan) return unexpected(plan.error().code, "layer " + str(layer) + ": " + plan.error().message);
    out.push_back(std::move(*plan));
  }
  return out;
}

}  // namespace loom::placement
