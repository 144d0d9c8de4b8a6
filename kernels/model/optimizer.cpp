#include "kernels/model/optimizer.hpp"

namespace loom::model {

void apply_adamw(param_set& p, const kernels::cpu::adamw_config& cfg, int step) {
  std::vector<float> g;
  for (auto& t : p.all()) {
    if (!t.trainable) continue;
    g.assign(t.grad.begin(), t.grad.end());
    kernels::cpu::adamw_config c = cfg;
    if (!t.decay) c.weight_decay = 0;
    kernels::cpu::adamw_step(t.value.data(), g.data(), t.m.data(), t.v.data(), t.value.size(), c, step);
  }
}

}  // namespace loom::model
