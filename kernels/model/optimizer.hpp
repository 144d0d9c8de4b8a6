// The step after the gradients are complete: AdamW on every trainable tensor, and DeepSeek-V3's
// bias update for sigmoid gating from the measured expert load.
#pragma once

#include <vector>

#include "kernels/cpu/adamw.hpp"
#include "kernels/model/params.hpp"

namespace loom::model {

// Applies AdamW (step counts from 1) to every trainable parameter of the set.
void apply_adamw(param_set& p, const kernels::cpu::adamw_config& cfg, int step);

// Sum of squared gradients (double) over the tensors `count` selects.
template <class Pred>
double grad_square_sum(const param_set& p, Pred count) {
  double s = 0;
  for (const auto& t : p.all())
    if (t.trainable && count(t))
      for (double g : t.grad) s += g * g;
  return s;
}

}  // namespace loom::model
