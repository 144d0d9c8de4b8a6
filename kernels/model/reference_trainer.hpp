// The whole model trained by a plain loop on one rank, no pipeline, no actors: the reference every
// schedule must agree with, and the baseline the runtime's overhead is measured against.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/cpu/adamw.hpp"
#include "kernels/model/config.hpp"
#include "kernels/model/params.hpp"

namespace loom::model {

struct reference_config {
  model_shape shape;
  int layers = 1;
  int microbatches = 1;
  int microbatch_size = 1;  // sequences per microbatch
  int steps = 1;
  std::uint64_t seed = 1;
  kernels::cpu::adamw_config adamw;
  float bias_update_rate = 0.001f;
};

struct reference_result {
  std::vector<double> loss;       // per step: mean cross-entropy over the step's tokens
  std::vector<double> grad_norm;  // per step: global L2 norm of the gradients, before the update
  param_set params;               // after the last step; grads hold the last step's gradients
};

reference_result train_reference(const reference_config& cfg);

}  // namespace loom::model
