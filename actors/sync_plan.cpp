#include "actors/sync_plan.hpp"

#include <algorithm>
#include <set>
#include <string>

namespace loom::actors {

namespace {

// Global ranks of the expert-parallel ranks `eps` of every pipeline rank holding `stage`.
std::vector<int> holders(const std::vector<std::vector<int>>& stage_holders, int stage, int ep, const std::set<int>& eps) {
  std::vector<int> out;
  for (int p : stage_holders.at(stage))
    for (int q : eps) out.push_back(p * ep + q);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

sync_plan build_sync_plan(const rank_context& ctx, const std::vector<std::vector<int>>& stage_holders) {
  const int ep = ctx.ep.ep;
  std::set<int> every_ep;
  for (int q = 0; q < ep; ++q) every_ep.insert(q);
  // For every tensor of this rank: its holders and its copies here.
  std::map<std::vector<int>, std::map<std::string, std::vector<std::pair<int, int>>>> by_members;
  for (std::size_t c = 0; c < ctx.chunks.size(); ++c) {
    const auto& chunk = ctx.chunks[c];
    const auto& params = chunk.params->all();
    std::vector<std::vector<int>> members_of(params.size());
    for (int i = 0; i < static_cast<int>(params.size()); ++i) members_of[i] = holders(stage_holders, chunk.stage, ep, every_ep);
    for (int l = 0; l < chunk.params->layers(); ++l) {
      const auto& ls = chunk.params->layer(l);
      const auto& map = chunk.slots[l];
      for (std::size_t j = 0; j < ls.slot_expert.size(); ++j) {
        std::set<int> eps;
        for (int slot : map.copies[ls.slot_expert[j]]) eps.insert(slot / map.slots_per_rank);
        auto h = holders(stage_holders, chunk.stage, ep, eps);
        for (int id : {ls.expert_w1[j], ls.expert_w3[j], ls.expert_w2[j]}) members_of[id] = h;
      }
    }
    for (int i = 0; i < static_cast<int>(params.size()); ++i)
      by_members[members_of[i]][params[i].name].push_back({static_cast<int>(c), i});
  }
  sync_plan plan;
  std::map<int, int> shared_with;  // other rank -> groups shared so far (groups come in canonical order)
  for (auto& [members, tensors] : by_members) {
    sync_group g;
    g.members = members;
    for (auto& [name, copies] : tensors) {
      std::sort(copies.begin(), copies.end());
      g.tensors.push_back(copies);
    }
    for (int m : members)
      if (m != ctx.global_rank) g.channel[m] = shared_with[m]++;
    plan.groups.push_back(std::move(g));
  }
  return plan;
}

}  // namespace loom::actors
