// Moving token copies between token order and expert order: the local halves of MoE dispatch and
// combine (the exchange between ranks is the transport's job).
#pragma once

#include <vector>

namespace loom::kernels::cpu {

// Where each (token, slot) copy goes. Copies are sorted by expert, then token, then slot (stable), so
// the order does not depend on how tokens are split between ranks.
struct route_plan {
  int experts = 0;
  std::vector<int> expert_offsets;  // [experts + 1]: copies of expert e are [offsets[e], offsets[e+1])
  std::vector<int> token;           // [copies]: source token row of each copy
  std::vector<int> slot;            // [copies]: which of the token's k choices it is
};

// topk_idx: [rows, k] expert ids in [0, experts).
route_plan make_route_plan(const int* topk_idx, int rows, int k, int experts);

// out[i] = x[plan.token[i]] for every copy i: [copies, cols].
void permute_rows(const float* x, int cols, const route_plan& plan, float* out);

// Combine: y[t] (+)= sum over copies i of token t of topk_weight[t, slot_i] * expert_out[i].
// Copies of a token are summed in slot order, so the result does not depend on the copy order.
void unpermute_weighted_sum(const float* expert_out, int cols, const route_plan& plan, const float* topk_weight,
                            int k, int rows, float* y, bool accumulate);

// Backward of the combine: d_expert_out[i] = w[t, slot_i] * dy[t]; d_topk_weight[t, slot_i] = dot(dy[t], expert_out[i]).
void unpermute_backward(const float* dy, const float* expert_out, int cols, const route_plan& plan,
                        const float* topk_weight, int k, float* d_expert_out, float* d_topk_weight);

// Backward of permute_rows: dx[t] (+)= sum over copies i of token t of d_out[i] (summed in slot order).
void permute_rows_backward(const float* d_out, int cols, const route_plan& plan, int k, int rows, float* dx,
                           bool accumulate);

}  // namespace loom::kernels::cpu
