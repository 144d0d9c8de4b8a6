// Small kernels the GPU model needs between the big ones (kernels/cuda/model/moe_layer.cu): sums,
// conversions, the router's popularity skew, the choice of an expert copy per token and the load count.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/types.hpp"

namespace loom::cuda::model {

// y[i] += x[i] (bf16, n elements).
expected<void> add_into(bf16* y, const bf16* x, std::size_t n, cudaStream_t stream);
// dst[i] = bf16(src[i]).
expected<void> to_bf16(const float* src, bf16* dst, std::size_t n, cudaStream_t stream);
// The router's popularity skew (model_shape::router_skew), as the CPU model adds it: logit[t, e] +=
// -skew * ln(e + 1) + Gumbel noise from (token_seed, first_token + t, e).
expected<void> add_router_skew(float* logits, int rows, int experts, float skew, std::uint64_t token_seed, int first_token,
                               cudaStream_t stream);
// slot[t * k + j] = the copy of expert topk_idx[t * k + j] that serves token first_token + t
// (model::slot_map::slot_for): copy_slots[copy_offsets[e] + token % copies of e].
expected<void> choose_slots(const int* topk_idx, int rows, int k, const int* copy_offsets, const int* copy_slots,
                            int first_token, int* slot, cudaStream_t stream);
// load[e] += number of entries equal to e among idx[0 .. n).
expected<void> count_load(const int* idx, int n, float* load, cudaStream_t stream);

}  // namespace loom::cuda::model
