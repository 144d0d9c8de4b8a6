// The SwiGLU gate, fused elementwise (the GEMMs around it are grouped_gemm.hpp for the routed experts and
// gemm.hpp for the shared expert): act = silu(h1) * h3, and its backward
//   dh3 = dact * silu(h1),  dh1 = dact * h3 * s (1 + h1 (1 - s)),  s = sigmoid(h1),
// as in kernels/cpu/swiglu.hpp. All tensors are bf16 [rows, ffn] with row strides (ld_*) in elements, so
// h1 and h3 may be the two halves of one [rows, 2 ffn] GEMM output (h3 = h1 + ffn, ld = 2 ffn); the
// arithmetic is fp32. dact may alias dh1 (each element is read before it is written).
#pragma once

#include "kernels/cuda/types.hpp"

namespace loom::cuda {

expected<void> swiglu_forward(const bf16* h1, const bf16* h3, int ld_h, bf16* act, int ld_act, int rows,
                              int ffn, cudaStream_t stream);

expected<void> swiglu_backward(const bf16* dact, int ld_dact, const bf16* h1, const bf16* h3, int ld_h,
                               bf16* dh1, bf16* dh3, int ld_dh, int rows, int ffn, cudaStream_t stream);

}  // namespace loom::cuda
