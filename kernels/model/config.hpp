// The shape of the model a stage runs, as the kernels see it (no file formats, no schedule).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace loom::model {

enum class gating { softmax, sigmoid };

struct model_shape {
  int hidden = 64;
  int heads = 4;
  int experts = 8;
  int top_k = 2;
  int expert_ffn = 64;
  int shared_ffn = 64;  // 0: no shared expert
  int vocab = 256;
  int seq_len = 32;
  gating gate = gating::softmax;
  float norm_eps = 1e-5f;
  float init_scale = 0.02f;
  // Popularity skew of the router, for experiments on imbalance: expert e's logit gets
  // -router_skew * ln(e + 1) plus Gumbel noise drawn from the token's identity, so a token's top-k
  // is a draw without replacement from Zipf(router_skew) popularity (the Gumbel top-k trick). The
  // noise depends on (microbatch, layer, token) alone: every schedule and split sees the same.
  float router_skew = 0.f;
  int head_dim() const { return hidden / heads; }
};

// This rank's place in its expert-parallel group.
struct ep_layout {
  int ep = 1;    // ranks in the group
  int index = 0; // this rank
};

// Where a layer's experts live: physical expert slots, laid out rank after rank (slots_per_rank
// each); slot s holds a copy of logical expert phy2log[s]. Redundant copies of hot experts share
// their expert's tokens: a token's copy is chosen by its position in the microbatch, so the result
// does not depend on which copy computes it.
struct slot_map {
  int slots_per_rank = 0;
  std::vector<int> phy2log;               // [slots]
  std::vector<std::vector<int>> copies;   // [logical expert]: its slots, ascending

  // One slot per expert, experts / ep per rank: no redundancy.
  static slot_map identity(int experts, int ep);
  // From a planner's phy2log for ep ranks.
  static slot_map from_phy2log(std::vector<int> phy2log, int ep);
  int slots() const { return static_cast<int>(phy2log.size()); }
  // The copy of `expert` that serves token `token` (its index in the whole microbatch).
  int slot_for(int expert, std::int64_t token) const {
    const auto& c = copies[expert];
    return c[static_cast<std::size_t>(token % static_cast<std::int64_t>(c.size()))];
  }
  // The logical experts of rank `rank`'s slots.
  std::vector<int> local_experts(int rank) const;
};

}  // namespace loom::model
