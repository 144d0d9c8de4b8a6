#include "kernels/model/config.hpp"

namespace loom::model {

slot_map slot_map::from_phy2log(std::vector<int> phy2log, int ep) {
  slot_map m;
  m.slots_per_rank = static_cast<int>(phy2log.size()) / ep;
  int experts = 0;
  for (int e : phy2log) experts = std::max(experts, e + 1);
  m.copies.assign(experts, {});
  for (int s = 0; s < static_cast<int>(phy2log.size()); ++s) m.copies[phy2log[s]].push_back(s);
  m.phy2log = std::move(phy2log);
  return m;
}

slot_map slot_map::identity(int experts, int ep) {
  std::vector<int> p(experts);
  for (int e = 0; e < experts; ++e) p[e] = e;
  return from_phy2log(std::move(p), ep);
}

std::vector<int> slot_map::local_experts(int rank) const {
  return std::vector<int>(phy2log.begin() + rank * slots_per_rank, phy2log.begin() + (rank + 1) * slots_per_rank);
}

}  // namespace loom::model
