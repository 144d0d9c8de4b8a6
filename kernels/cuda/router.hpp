// The MoE router on the GPU, as kernels/cpu/router.hpp: from fp32 router logits [rows, experts] to each
// token's top-k experts (descending selection score, ties to the lower expert index) and weights.
//   softmax gating: p = softmax(logits), the k largest p, weight = p.
//   sigmoid gating: s = sigmoid(logits), the k largest s + bias (selection only), weight = s / sum(chosen s).
// One warp per row, experts <= 1024 (each lane holds up to 32 scores in registers); k <= experts.
#pragma once

#include "kernels/cuda/types.hpp"

namespace loom::cuda {

enum class gating { softmax, sigmoid };

// topk_idx (int), topk_weight (fp32): [rows, k]; scores (fp32 [rows, experts]) saved for the backward.
// bias: [experts] or null (sigmoid only).
expected<void> router_forward(gating g, const float* logits, const float* bias, int rows, int experts, int k,
                              int* topk_idx, float* topk_weight, float* scores, cudaStream_t stream);

// dlogits [rows, experts] (overwritten) from d_topk_weight [rows, k]; the selection is held constant.
expected<void> router_backward(gating g, const float* scores, const int* topk_idx, const float* topk_weight,
                               const float* d_topk_weight, int rows, int experts, int k, float* dlogits,
                               cudaStream_t stream);

// bias[e] += rate * sign(mean(load) - load[e]) (one block).
expected<void> router_update_bias(float* bias, const float* load, int experts, float rate,
                                  cudaStream_t stream);

}  // namespace loom::cuda
