// Overlap recipes: the components of an overlapped F&B pair, their data dependencies, and the check
// that a recipe's stream orders cannot deadlock.
//
// Per layer, a forward runs attn -> dispatch -> mlp -> combine and a backward runs
// combine -> mlp -> dispatch -> attn, each input part followed (in a full B) by its weight part
// (b.mlp.w after b.mlp, b.attn.w after b.attn). dispatch and combine are communication and belong on
// the comm stream; the others on the compute stream.
#pragma once

#include <vector>

#include "runtime/schedule/schedule.hpp"
#include "support/diagnostic.hpp"

namespace loom::schedule {

// The items of a pair, in a fixed order (the index used by recipe_dependencies): ten for F&B
// (f.attn f.dispatch f.mlp f.combine b.combine b.mlp b.mlp.w b.dispatch b.attn b.attn.w), eight for
// F&F (the forward chain of f, then of f2).
const std::vector<recipe_item>& pair_items(bool forward_pair = false);
int item_index(const recipe_item& item, bool forward_pair = false);

// For each item index, the item indices it depends on within one layer of the pair.
const std::vector<std::vector<int>>& recipe_dependencies(bool forward_pair = false);

// True when the recipe is for F&F pairs (it names f2 items).
bool is_forward_pair_recipe(const overlap_recipe& r);

// Streams named compute and comm, each item once, on the right stream, and an order that runs to
// the end. A bad order is reported with the two streams' heads waiting on each other.
void check_recipe(const overlap_recipe& r, diagnostic_list& diags);

// DeepSeek-V3's recipe (the default when a schedule names none): combine(B) under attn(F),
// dispatch(F) under mlp(B), dispatch(B) under mlp(W) and mlp(F), combine(F) under attn(B).
overlap_recipe deepseek_v3_recipe();

}  // namespace loom::schedule
