// One SwiGLU expert (see swiglu.hpp): three GEMMs around an elementwise gate.
#include "kernels/cpu/swiglu.hpp"

#include <cmath>
#include <cstddef>

#include "kernels/cpu/gemm.hpp"

namespace loom::kernels::cpu {

namespace {

// sigmoid(x) without overflow: exp is only taken of a non-positive number.
float sigmoid(float x) {
  if (x >= 0.f) return 1.f / (1.f + std::exp(-x));
  const float e = std::exp(x);
  return e / (1.f + e);
}

std::size_t count(int rows, int cols) {
  return static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols);
}

}  // namespace

void swiglu_forward(const float* x, int rows, int hidden, int ffn, const swiglu_weights& w, float* h1,
                    float* h3, float* act, float* y, bool accumulate) {
  gemm(false, false, rows, ffn, hidden, 1.f, x, hidden, w.w1, ffn, 0.f, h1, ffn);
  gemm(false, false, rows, ffn, hidden, 1.f, x, hidden, w.w3, ffn, 0.f, h3, ffn);
  const std::size_t n = count(rows, ffn);
  for (std::size_t i = 0; i < n; ++i) act[i] = h1[i] * sigmoid(h1[i]) * h3[i];
  gemm(false, false, rows, hidden, ffn, 1.f, act, ffn, w.w2, hidden, accumulate ? 1.f : 0.f, y, hidden);
}

// d act = dy W2^T; act = silu(h1) h3, so dh3 = d act * silu(h1) and
// dh1 = d act * h3 * silu'(h1) with silu'(x) = s (1 + x (1 - s)), s = sigmoid(x).
void swiglu_backward_input(const float* dy, int rows, int hidden, int ffn, const swiglu_weights& w,
                           const float* h1, const float* h3, float* dh1, float* dh3, float* dx,
                           bool accumulate) {
  gemm(false, true, rows, ffn, hidden, 1.f, dy, hidden, w.w2, hidden, 0.f, dh1,
       ffn);  // dh1 holds d act for now
  const std::size_t n = count(rows, ffn);
  for (std::size_t i = 0; i < n; ++i) {
    const float da = dh1[i];
    const float s = sigmoid(h1[i]);
    dh3[i] = da * h1[i] * s;
    dh1[i] = da * h3[i] * s * (1.f + h1[i] * (1.f - s));
  }
  gemm(false, true, rows, hidden, ffn, 1.f, dh1, ffn, w.w1, ffn, accumulate ? 1.f : 0.f, dx, hidden);
  gemm(false, true, rows, hidden, ffn, 1.f, dh3, ffn, w.w3, ffn, 1.f, dx, hidden);
}

void swiglu_backward_weight(const float* x, const float* act, const float* dy, const float* dh1,
                            const float* dh3, int rows, int hidden, int ffn, float* dw1, float* dw3,
                            float* dw2) {
  gemm(true, false, hidden, ffn, rows, 1.f, x, hidden, dh1, ffn, 1.f, dw1, ffn);
  gemm(true, false, hidden, ffn, rows, 1.f, x, hidden, dh3, ffn, 1.f, dw3, ffn);
  gemm(true, false, ffn, hidden, rows, 1.f, act, ffn, dy, hidden, 1.f, dw2, hidden);
}

}  // namespace loom::kernels::cpu
