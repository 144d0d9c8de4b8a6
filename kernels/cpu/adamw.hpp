// The AdamW optimizer step (decoupled weight decay), applied after each schedule step.
#pragma once

#include <cstddef>

namespace loom::kernels::cpu {

struct adamw_config {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;
};

// step counts from 1. m and v are the moment estimates, same size as param.
void adamw_step(float* param, const float* grad, float* m, float* v, std::size_t n, const adamw_config& cfg,
                int step);

}  // namespace loom::kernels::cpu
