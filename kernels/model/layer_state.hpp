// What one layer keeps for one microbatch between its forward and its backward parts, on one rank.
// The runtime creates it at the layer's forward and frees it after the layer's weight part; each
// component fills and reads its own fields.
#pragma once

#include <cstddef>
#include <vector>

#include "kernels/cpu/permute.hpp"

namespace loom::model {

using buffer = std::vector<float>;

// Rows of expert work this rank received for its experts, grouped by local expert (and within an
// expert by source rank, then token, then slot: the global order, whatever the split of tokens).
struct expert_batch {
  std::vector<int> expert_offsets;          // [local experts + 1]
  std::vector<int> source_offsets;          // per (source, local expert): start row in `rows`
  std::vector<std::vector<int>> counts_from;  // [source][local expert]: rows received
  buffer rows;                              // [n, hidden]
};

struct layer_state {
  // attention component
  buffer x;            // layer input [T, d]
  buffer ln1, inv1;    // RMSNorm 1 output and 1/rms
  buffer qkv, ctx, lse;
  buffer h;            // after the attention residual
  buffer u, inv2;      // RMSNorm 2 output (the MoE input) and 1/rms
  buffer scores;       // router probabilities / sigmoid scores [T, E]
  std::vector<int> topk_idx;
  buffer topk_w;
  // dispatch (source side)
  kernels::cpu::route_plan plan;
  std::vector<int> send_offsets;  // [ep + 1] ranges of plan copies per owner rank
  // mlp (owner side) and shared expert (source side)
  expert_batch in;     // received rows
  buffer h1, h3, act;  // expert intermediates [n, ffn]
  buffer out;          // expert outputs [n, d]
  buffer sh1, sh3, sact, ys;  // shared expert intermediates and output [T, d]
  // combine (source side)
  buffer expert_out;   // [copies, d] in plan order
  buffer y;            // layer output [T, d]
  // backward
  buffer dy;                 // gradient of the layer output
  buffer d_expert_out;       // [copies, d]
  buffer d_topk_w;           // [T, k]
  buffer d_rows;             // owner: gradient of expert outputs [n, d] (received)
  buffer dh1, dh3;           // owner: saved for the weight part
  buffer dx_rows;            // owner: gradient of expert inputs [n, d]
  buffer dsh1, dsh3, du_shared;
  buffer du_moe;             // source: gradient of u from the experts
  buffer dlogits, du, dh, dqkv, dln1, dx;  // attention backward; dx is the layer input gradient
  bool forward_done = false;

  std::size_t bytes() const;
  // Frees what only the input-gradient part needed, keeping what the weight part reads.
  void release_after_input_backward();
};

}  // namespace loom::model
