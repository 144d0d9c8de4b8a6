// RMSNorm: y = x / rms(x) * gamma, rms(x) = sqrt(mean(x^2) + eps), per row. Backward is split into
// the part for the input (I) and the part for the weight gamma (W).
#pragma once

namespace loom::kernels::cpu {

// x, y: [rows, dim]; gamma: [dim]; inv_rms: [rows], saved for the backward passes.
void rmsnorm_forward(const float* x, const float* gamma, float* y, float* inv_rms, int rows, int dim,
                     float eps);

// dx = dL/dx given dy = dL/dy. accumulate = false overwrites dx, true adds to it.
void rmsnorm_backward_input(const float* dy, const float* x, const float* gamma, const float* inv_rms,
                            float* dx, int rows, int dim, bool accumulate);

// dgamma += sum over rows of dy * x * inv_rms.
void rmsnorm_backward_weight(const float* dy, const float* x, const float* inv_rms, float* dgamma, int rows,
                             int dim);

}  // namespace loom::kernels::cpu
