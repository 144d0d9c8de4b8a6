#include "runtime/exec/expert_balancer.hpp"

#include "runtime/placement/planner.hpp"

namespace loom::exec {

expert_balancer::expert_balancer(expert_policy_config policy, int layers, int experts, int ep)
    : policy_(std::move(policy)), layers_(layers), experts_(experts), ep_(ep) {}

expected<std::vector<int>> expert_balancer::plan(const std::vector<double>& load) const {
  placement::topology topo;
  topo.num_slots = static_cast<std::size_t>(experts_ + policy_.redundant);
  topo.num_gpus = static_cast<std::size_t>(ep_);
  topo.num_nodes = 1;  // one expert-parallel group is one node here
  topo.num_groups = policy_.planner == "global" ? 1 : static_cast<std::size_t>(policy_.groups);
  auto p = placement::plan_layer(load, topo);
  if (!p) return unexpected(p.error());
  return std::vector<int>(p->phy2log.begin(), p->phy2log.end());
}

expected<std::vector<model::slot_map>> expert_balancer::initial() {
  const int slots = experts_ + policy_.redundant;
  if (slots % ep_ != 0)
    return unexpected(errc::invalid_experiment, "experts (" + std::to_string(experts_) + ") + redundant (" +
                                                    std::to_string(policy_.redundant) + ") slots do not divide over ep = " +
                                                    std::to_string(ep_) + " ranks");
  if (experts_ % policy_.groups != 0)
    return unexpected(errc::invalid_experiment, "experts (" + std::to_string(experts_) + ") do not divide into " +
                                                    std::to_string(policy_.groups) + " groups");
  std::vector<model::slot_map> maps;
  auto first = plan(std::vector<double>(experts_, 1.0));
  if (!first) return unexpected(first.error());
  current_.assign(layers_, *first);
  for (int l = 0; l < layers_; ++l) maps.push_back(model::slot_map::from_phy2log(*first, ep_));
  return maps;
}

actors::migrate_request expert_balancer::after_step(int step, const std::vector<double>& load) {
  actors::migrate_request req;
  if (policy_.replan_every <= 0 || load.size() != static_cast<std::size_t>(layers_) * experts_) return req;
  window_.push_back(load);
  while (static_cast<int>(window_.size()) > policy_.window) window_.pop_front();
  if ((step + 1) % policy_.replan_every != 0) return req;
  replan_record rec;
  rec.step = step;
  for (int l = 0; l < layers_; ++l) {
    std::vector<double> avg(experts_, 0.0);
    for (const auto& w : window_)
      for (int e = 0; e < experts_; ++e) avg[e] += w[static_cast<std::size_t>(l) * experts_ + e] / window_.size();
    std::vector<std::size_t> old(current_[l].begin(), current_[l].end());
    auto before = placement::imbalance(avg, old, static_cast<std::size_t>(ep_));
    auto next = plan(avg);
    if (!before || !next) continue;  // a plan that cannot be made leaves the layer where it is
    std::vector<std::size_t> fresh(next->begin(), next->end());
    auto after = placement::imbalance(avg, fresh, static_cast<std::size_t>(ep_));
    rec.before.push_back(*before);
    rec.after.push_back(after ? *after : *before);
    if (*next == current_[l]) continue;
    current_[l] = *next;
    req.layers.push_back(l);
    req.phy2log.emplace_back(next->begin(), next->end());
  }
  history_.push_back(std::move(rec));
  return req;
}

}  // namespace loom::exec
