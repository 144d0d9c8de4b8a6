// The MoE router: from router logits [rows, experts] to each token's top-k experts and their weights.
//
// softmax gating: p = softmax(logits); the k largest p are chosen; weight = p (not renormalised).
// sigmoid gating (DeepSeek-V3): s = sigmoid(logits); the k largest s + bias are chosen (bias is the
//   auxiliary-loss-free balancing term, used for selection only); weight = s / sum of the chosen s.
// Ties go to the lower expert index, so selection is deterministic.
#pragma once

namespace loom::kernels::cpu {

enum class gating { softmax, sigmoid };

// topk_idx, topk_weight: [rows, k], chosen experts in descending order of the selection score.
// scores: [rows, experts], p or s, saved for the backward pass. bias: [experts] or nullptr.
void router_forward(gating g, const float* logits, const float* bias, int rows, int experts, int k, int* topk_idx,
                    float* topk_weight, float* scores);

// dlogits [rows, experts] (overwritten) from d_topk_weight [rows, k]; the selection is treated as constant.
void router_backward(gating g, const float* scores, const int* topk_idx, const float* topk_weight,
                     const float* d_topk_weight, int rows, int experts, int k, float* dlogits);

// DeepSeek-V3's bias update after a step: bias[e] += rate * sign(mean_load - load[e]).
void router_update_bias(float* bias, const float* load, int experts, float rate);

}  // namespace loom::kernels::cpu
