// The AdamW step on the GPU, as kernels/cpu/adamw.hpp (decoupled weight decay, PyTorch's form), on fp32
// master weights and fp32 moments, writing in the same pass the bf16 copy of the weights that the GEMMs
// read. Bias corrections are computed on the host in double.
#pragma once

#include <cstddef>

#include "kernels/cuda/types.hpp"

namespace loom::cuda {

struct adamw_config {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;
};

// step counts from 1. param, grad, m, v: fp32 [n]; param_bf16: bf16 [n] (may be null: no copy written).
expected<void> adamw_step(float* param, const float* grad, float* m, float* v, bf16* param_bf16,
                          std::size_t n, const adamw_config& cfg, int step, cudaStream_t stream);

}  // namespace loom::cuda
