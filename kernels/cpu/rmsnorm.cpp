// RMSNorm forward and its split backward (see rmsnorm.hpp). Row reductions accumulate in double:
// they are a small part of the work and keep the result independent of dim's size within rounding.
#include "kernels/cpu/rmsnorm.hpp"

#include <cmath>
#include <cstddef>

namespace loom::kernels::cpu {

namespace {

std::size_t offset(int row, int dim) { return static_cast<std::size_t>(row) * static_cast<std::size_t>(dim); }

}  // namespace

void rmsnorm_forward(const float* x, const float* gamma, float* y, float* inv_rms, int rows, int dim,
                     float eps) {
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + offset(r, dim);
    float* yr = y + offset(r, dim);
    double sum_sq = 0;
    for (int j = 0; j < dim; ++j) sum_sq += static_cast<double>(xr[j]) * xr[j];
    const auto inv = static_cast<float>(1.0 / std::sqrt(sum_sq / dim + eps));
    inv_rms[r] = inv;
    for (int j = 0; j < dim; ++j) yr[j] = xr[j] * inv * gamma[j];
  }
}

// With r = inv_rms, y_j = x_j r g_j and dr/dx_j = -x_j r^3 / dim, so
// dx_j = r g_j dy_j - x_j r^3 / dim * sum_i dy_i g_i x_i.
void rmsnorm_backward_input(const float* dy, const float* x, const float* gamma, const float* inv_rms,
                            float* dx, int rows, int dim, bool accumulate) {
  for (int r = 0; r < rows; ++r) {
    const float* dyr = dy + offset(r, dim);
    const float* xr = x + offset(r, dim);
    float* dxr = dx + offset(r, dim);
    double dot = 0;
    for (int j = 0; j < dim; ++j) dot += static_cast<double>(dyr[j]) * gamma[j] * xr[j];
    const float inv = inv_rms[r];
    const auto coef = static_cast<float>(dot * inv * inv * inv / dim);
    for (int j = 0; j < dim; ++j) {
      const float g = inv * gamma[j] * dyr[j] - xr[j] * coef;
      dxr[j] = accumulate ? dxr[j] + g : g;
    }
  }
}

void rmsnorm_backward_weight(const float* dy, const float* x, const float* inv_rms, float* dgamma, int rows,
                             int dim) {
  for (int r = 0; r < rows; ++r) {
    const float* dyr = dy + offset(r, dim);
    const float* xr = x + offset(r, dim);
    const float inv = inv_rms[r];
    for (int j = 0; j < dim; ++j) dgamma[j] += dyr[j] * xr[j] * inv;
  }
}

}  // namespace loom::kernels::cpu
