#include "actors/expert_migration.hpp"

#include <algorithm>

namespace loom::actors {

namespace {

payload pack(std::vector<std::vector<float>> state) {
  payload p;
  for (auto& t : state) p.f.insert(p.f.end(), t.begin(), t.end());
  return p;
}

// The sizes of the nine tensors of a slot's state: value, m, v of w1, w3 ([d, f]) and w2 ([f, d]).
std::size_t tensor_size(const model::model_shape& m) {
  return static_cast<std::size_t>(m.hidden) * static_cast<std::size_t>(m.expert_ffn);
}

}  // namespace

migration plan_migration(const rank_context& ctx, const migrate_request& req) {
  migration plan;
  const int ep = ctx.ep.ep, me = ctx.ep_index;
  for (std::size_t c = 0; c < ctx.chunks.size(); ++c) {
    const auto& chunk = ctx.chunks[c];
    for (int l = 0; l < static_cast<int>(chunk.slots.size()); ++l) {
      const int logical = chunk.first_layer + l;
      auto it = std::find(req.layers.begin(), req.layers.end(), logical);
      if (it == req.layers.end()) continue;
      const auto& old_map = chunk.slots[l];
      std::vector<int> next(req.phy2log[it - req.layers.begin()].begin(), req.phy2log[it - req.layers.begin()].end());
      auto new_map = model::slot_map::from_phy2log(std::move(next), ep);
      const int spr = old_map.slots_per_rank;
      // Who holds what before: the first (lowest) rank holding an expert sends it to those who lack it.
      auto holds = [&](int rank, int expert) {
        for (int j = 0; j < spr; ++j)
          if (old_map.phy2log[rank * spr + j] == expert) return j;
        return -1;
      };
      auto source_of = [&](int expert) { return old_map.copies[expert].front() / spr; };
      auto slot_tag = [&](int global_slot) {
        return tag{traffic::expert_migration, static_cast<std::uint16_t>(chunk.pipeline), static_cast<std::uint16_t>(chunk.stage),
                   static_cast<std::uint16_t>(logical), static_cast<std::uint32_t>(global_slot)};
      };
      for (int q = 0; q < ep; ++q)
        for (int j = 0; j < spr; ++j) {
          const int slot = q * spr + j;
          const int e = new_map.phy2log[slot];
          if (holds(q, e) >= 0) {
            if (q == me) plan.keep.push_back({static_cast<int>(c), l, j, e, chunk.params->slot_state(l, holds(q, e))});
            continue;
          }
          const int src = source_of(e);
          if (q == me) plan.receive.push_back({static_cast<int>(c), l, j, e, ctx.pipeline_rank * ep + src, slot_tag(slot)});
          else if (src == me) plan.send.push_back({ctx.pipeline_rank * ep + q, slot_tag(slot), pack(chunk.params->slot_state(l, holds(me, e)))});
        }
      plan.maps.emplace_back(static_cast<int>(c), l, std::move(new_map));
    }
  }
  return plan;
}

expected<void> fill_slot(rank_context& ctx, const migration::incoming& in, payload data) {
  const std::size_t n = tensor_size(ctx.shape);
  if (data.f.size() != 9 * n)
    return unexpected(errc::transport_error, "expert migration: a slot's state has " + std::to_string(data.f.size()) +
                                                 " values, expected " + std::to_string(9 * n));
  std::vector<std::vector<float>> state(9);
  for (int t = 0; t < 9; ++t) state[t].assign(data.f.begin() + t * n, data.f.begin() + (t + 1) * n);
  ctx.chunks[in.chunk].params->assign_slot(in.layer, in.slot, in.expert, std::move(state));
  return {};
}

void finish_migration(rank_context& ctx, migration& m) {
  for (auto& k : m.keep) ctx.chunks[k.chunk].params->assign_slot(k.layer, k.slot, k.expert, std::move(k.state));
  for (auto& [c, l, map] : m.maps) ctx.chunks[c].slots[l] = std::move(map);
}

}  // namespace loom::actors
