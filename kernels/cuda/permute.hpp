// Dispatch and combine on one GPU, as kernels/cpu/permute.hpp: token order <-> expert-slot order.
//
// The route plan is built on the device with no host synchronisation: a stable counting sort of the
// rows * k (token, slot) copies by expert slot. Copies are ordered by slot, then token, then k-slot, so
// the plan equals make_route_plan on the CPU. Every copy is routed, so the plan always has rows * k copies
// and only the per-slot offsets (which the grouped GEMM reads from device memory) depend on the data.
// Rows are bf16 [*, cols] (16-byte vector paths when cols % 8 == 0); the weighted sums are fp32 and run
// in k-slot order, so they do not depend on the copy order.
//
// SM budget: the four row movers (dispatch, combine and their backward) take a trailing max_blocks: the
// grid is capped at that many blocks (0 = no cap: enough blocks of a few rows, or of 8 warps of a row
// each, for every row), which stride over the rows. A block runs on one SM, so the kernel occupies at most max_blocks SMs (the runtime's
// communication budget, e.g. 20 of 132, while expert GEMMs run beside it). Results do not depend on
// max_blocks, bit for bit.
#pragma once

#include <cstddef>

#include "kernels/cuda/types.hpp"

namespace loom::cuda {

// Caller-owned device arrays of one plan.
struct route_plan_device {
  int* offsets = nullptr;   // [experts + 1]: copies of slot e are [offsets[e], offsets[e+1])
  int* token = nullptr;     // [rows * k]: source token of each copy
  int* slot = nullptr;      // [rows * k]: which of the token's k choices it is
  int* position = nullptr;  // [rows * k]: position[t * k + j] = the copy carrying (t, j)
};

// Scratch bytes make_route_plan needs for these sizes.
std::size_t route_plan_workspace_bytes(int rows, int k, int experts);

// topk_idx: [rows, k] slot ids in [0, experts) (ids outside are a caller error: such copies are dropped
// and the plan's tail is left unwritten). experts <= 12288.
expected<void> make_route_plan(const int* topk_idx, int rows, int k, int experts,
                               const route_plan_device& plan, void* workspace, std::size_t workspace_bytes,
                               cudaStream_t stream);

// out[i] = x[token[i]]: [copies, cols].
expected<void> permute_rows(const bf16* x, int cols, const route_plan_device& plan, int copies, bf16* out,
                            cudaStream_t stream, int max_blocks = 0);

// Combine: y[t] (+)= sum over j < k of topk_weight[t, j] * expert_out[position[t, j]].
expected<void> unpermute_weighted_sum(const bf16* expert_out, int cols, const route_plan_device& plan,
                                      const float* topk_weight, int k, int rows, bf16* y, bool accumulate,
                                      cudaStream_t stream, int max_blocks = 0);

// Backward of the combine: d_expert_out[i] = w[t, j] dy[t]; d_topk_weight[t, j] = dot(dy[t], expert_out[i]).
expected<void> unpermute_backward(const bf16* dy, const bf16* expert_out, int cols,
                                  const route_plan_device& plan, int copies, const float* topk_weight, int k,
                                  bf16* d_expert_out, float* d_topk_weight, cudaStream_t stream,
                                  int max_blocks = 0);

// Backward of permute_rows: dx[t] (+)= sum over j of d_out[position[t, j]].
expected<void> permute_rows_backward(const bf16* d_out, int cols, const route_plan_device& plan, int k,
                                     int rows, bf16* dx, bool accumulate, cudaStream_t stream,
                                     int max_blocks = 0);

}  // namespace loom::cuda
