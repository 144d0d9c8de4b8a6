// The AdamW step (see adamw.hpp), in the form of Loshchilov & Hutter / PyTorch's AdamW:
//   m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2,
//   param -= lr * (m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps) + weight_decay * param).
#include "kernels/cpu/adamw.hpp"

#include <cmath>

namespace loom::kernels::cpu {

void adamw_step(float* param, const float* grad, float* m, float* v, std::size_t n, const adamw_config& cfg,
                int step) {
  // Bias corrections in double: for small step and beta close to 1, 1 - beta^t loses digits in float.
  const auto c1 = static_cast<float>(1.0 / (1.0 - std::pow(static_cast<double>(cfg.beta1), step)));
  const auto c2 = static_cast<float>(1.0 / (1.0 - std::pow(static_cast<double>(cfg.beta2), step)));
  const float decay = 1.f - cfg.lr * cfg.weight_decay;
  for (std::size_t i = 0; i < n; ++i) {
    const float g = grad[i];
    m[i] = cfg.beta1 * m[i] + (1.f - cfg.beta1) * g;
    v[i] = cfg.beta2 * v[i] + (1.f - cfg.beta2) * g * g;
    const float update = (m[i] * c1) / (std::sqrt(v[i] * c2) + cfg.eps);
    param[i] = param[i] * decay - cfg.lr * update;
  }
}

}  // namespace loom::kernels::cpu
