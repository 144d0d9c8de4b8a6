// RMSNorm on the GPU, the semantics of kernels/cpu/rmsnorm.hpp: y = x / rms(x) * gamma with
// rms = sqrt(mean(x^2) + eps) per row. x, y, dy, dx and gamma are bf16; the row statistics, inv_rms and the
// reductions are fp32; dgamma accumulates into an fp32 buffer. One block per row (forward, backward for
// the input); the weight part sums column strips over row chunks and adds them with fp32 atomics.
#pragma once

#include "kernels/cuda/types.hpp"

namespace loom::cuda {

// x, y: [rows, dim]; gamma: [dim]; inv_rms: [rows] (fp32), saved for the backward passes.
expected<void> rmsnorm_forward(const bf16* x, const bf16* gamma, bf16* y, float* inv_rms, int rows, int dim,
                               float eps, cudaStream_t stream);

// dx (=, or += with accumulate) from dy.
expected<void> rmsnorm_backward_input(const bf16* dy, const bf16* x, const bf16* gamma, const float* inv_rms,
                                      bf16* dx, int rows, int dim, bool accumulate, cudaStream_t stream);

// dgamma (fp32) += sum over rows of dy * x * inv_rms.
expected<void> rmsnorm_backward_weight(const bf16* dy, const bf16* x, const float* inv_rms, float* dgamma,
                                       int rows, int dim, cudaStream_t stream);

}  // namespace loom::cuda
