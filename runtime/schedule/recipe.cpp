#include "runtime/schedule/recipe.hpp"

#include <string>

namespace loom::schedule {

namespace {

recipe_item item(pair_side side, component c, bool weight = false) { return {side, c, weight, {}}; }
constexpr pair_side F = pair_side::f, B = pair_side::b, F2 = pair_side::f2;

}  // namespace

const std::vector<recipe_item>& pair_items(bool forward_pair) {
  static const std::vector<recipe_item> fb = {
      item(F, component::attn),     item(F, component::dispatch), item(F, component::mlp),
      item(F, component::combine),  item(B, component::combine),  item(B, component::mlp),
      item(B, component::mlp, true), item(B, component::dispatch), item(B, component::attn),
      item(B, component::attn, true),
  };
  static const std::vector<recipe_item> ff = {
      item(F, component::attn),  item(F, component::dispatch),  item(F, component::mlp),  item(F, component::combine),
      item(F2, component::attn), item(F2, component::dispatch), item(F2, component::mlp), item(F2, component::combine),
  };
  return forward_pair ? ff : fb;
}

int item_index(const recipe_item& it, bool forward_pair) {
  const auto& items = pair_items(forward_pair);
  for (std::size_t i = 0; i < items.size(); ++i)
    if (items[i] == it) return static_cast<int>(i);
  return -1;
}

const std::vector<std::vector<int>>& recipe_dependencies(bool forward_pair) {
  // f.attn, f.dispatch, f.mlp, f.combine, b.combine, b.mlp, b.mlp.w, b.dispatch, b.attn, b.attn.w
  static const std::vector<std::vector<int>> fb = {{}, {0}, {1}, {2}, {}, {4}, {5}, {5}, {7}, {8}};
  // f.attn, f.dispatch, f.mlp, f.combine, f2.attn, f2.dispatch, f2.mlp, f2.combine
  static const std::vector<std::vector<int>> ff = {{}, {0}, {1}, {2}, {}, {4}, {5}, {6}};
  return forward_pair ? ff : fb;
}

bool is_forward_pair_recipe(const overlap_recipe& r) {
  for (const auto& st : r.streams)
    for (const auto& it : st.order)
      if (it.side == pair_side::f2) return true;
  return false;
}

void check_recipe(const overlap_recipe& r, diagnostic_list& diags) {
  const bool ff = is_forward_pair_recipe(r);
  const auto& items = pair_items(ff);
  std::vector<int> stream_of(items.size(), -1);
  std::vector<source_loc> where(items.size());
  const recipe_stream* compute = nullptr;
  const recipe_stream* comm = nullptr;
  const std::size_t errors_before = diags.error_count();
  for (const auto& st : r.streams) {
    if (st.name == "compute") {
      if (compute) diags.error(st.where, "recipe '" + r.name + "' has two compute streams");
      compute = &st;
      if (st.sms != 0) diags.error(st.where, "an SM budget belongs on the comm stream; compute gets the rest");
    } else if (st.name == "comm") {
      if (comm) diags.error(st.where, "recipe '" + r.name + "' has two comm streams");
      comm = &st;
    } else {
      diags.error(st.where, "unknown stream '" + st.name + "': a recipe has a 'compute' and a 'comm' stream");
      continue;
    }
    for (const auto& it : st.order) {
      int idx = item_index(it, ff);
      if (is_communication(it.part) != (st.name == "comm")) {
        diags.error(it.where, to_string(it) + (is_communication(it.part) ? " is communication: it belongs on the comm stream"
                                                                         : " is computation: it belongs on the compute stream"));
        continue;
      }
      if (idx < 0) {
        diags.error(it.where, to_string(it) + (ff && it.side == pair_side::b
                                                   ? " cannot appear in a recipe for two forwards (it names f2 items)"
                                                   : " is not a component of a pair (only the backward's attn and mlp have a "
                                                     "weight part)"));
        continue;
      }
      if (stream_of[idx] >= 0) {
        auto& d = diags.error(it.where, to_string(it) + " appears twice in recipe '" + r.name + "'");
        d.notes.push_back({severity::note, where[idx], "first listed here", {}});
        continue;
      }
      stream_of[idx] = st.name == "comm" ? 1 : 0;
      where[idx] = it.where;
    }
  }
  for (std::size_t i = 0; i < items.size(); ++i)
    if (stream_of[i] < 0) diags.error(r.where, "recipe '" + r.name + "' does not place " + to_string(items[i]));
  if (diags.error_count() != errors_before) return;

  // Run the two streams in order against the dependencies; a stall is a deadlock.
  const auto& deps = recipe_dependencies(ff);
  std::vector<bool> done(items.size(), false);
  const recipe_stream* streams[2] = {compute, comm};
  std::size_t head[2] = {0, 0};
  auto index = [&](const recipe_item& it) { return item_index(it, ff); };
  auto ready = [&](int idx) {
    for (int d : deps[idx])
      if (!done[d]) return false;
    return true;
  };
  for (bool moved = true; moved;) {
    moved = false;
    for (int s = 0; s < 2; ++s)
      while (head[s] < streams[s]->order.size() && ready(index(streams[s]->order[head[s]]))) {
        done[index(streams[s]->order[head[s]])] = true;
        ++head[s];
        moved = true;
      }
  }
  if (head[0] == compute->order.size() && head[1] == comm->order.size()) return;
  auto& d = diags.error(r.where, "recipe '" + r.name + "' deadlocks: each stream waits at its head for the other");
  for (int s = 0; s < 2; ++s) {
    if (head[s] == streams[s]->order.size()) continue;
    const auto& it = streams[s]->order[head[s]];
    std::string missing;
    for (int dep : deps[index(it)])
      if (!done[dep]) missing += (missing.empty() ? "" : ", ") + to_string(items[dep]);
    d.notes.push_back({severity::note, it.where,
                       "the " + streams[s]->name + " stream stops at " + to_string(it) + ", which needs " + missing, {}});
  }
}

overlap_recipe deepseek_v3_recipe() {
  overlap_recipe r;
  r.name = "deepseek_v3";
  recipe_stream comm{"comm", 20,
                     {item(B, component::combine), item(F, component::dispatch), item(B, component::dispatch),
                      item(F, component::combine)},
                     {}};
  recipe_stream compute{"compute", 0,
                        {item(F, component::attn), item(B, component::mlp), item(B, component::mlp, true),
                         item(F, component::mlp), item(B, component::attn), item(B, component::attn, true)},
                        {}};
  r.streams = {compute, comm};
  return r;
}

}  // namespace loom::schedule
