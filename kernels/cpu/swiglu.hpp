// One SwiGLU expert on a block of rows: y = (silu(x W1) * (x W3)) W2.
// x: [rows, hidden]; W1, W3: [hidden, ffn]; W2: [ffn, hidden]; y: [rows, hidden].
// Backward is split: the input part (I) produces dx and the intermediates the weight part (W) needs.
#pragma once

namespace loom::kernels::cpu {

struct swiglu_weights {
  const float* w1;
  const float* w3;
  const float* w2;
};

// Saves h1 = x W1, h3 = x W3 and act = silu(h1) * h3 (each [rows, ffn]) for backward.
// accumulate = true adds into y instead of overwriting it.
void swiglu_forward(const float* x, int rows, int hidden, int ffn, const swiglu_weights& w, float* h1, float* h3,
                    float* act, float* y, bool accumulate);

// From dy: dh1 and dh3 ([rows, ffn], saved for the weight part) and dx ([rows, hidden]).
// accumulate = true adds into dx.
void swiglu_backward_input(const float* dy, int rows, int hidden, int ffn, const swiglu_weights& w,
                           const float* h1, const float* h3, float* dh1, float* dh3, float* dx, bool accumulate);

// dW1 += x^T dh1, dW3 += x^T dh3, dW2 += act^T dy.
void swiglu_backward_weight(const float* x, const float* act, const float* dy, const float* dh1, const float* dh3,
                            int rows, int hidden, int ffn, float* dw1, float* dw3, float* dw2);

}  // namespace loom::kernels::cpu
