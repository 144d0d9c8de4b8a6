// The ends of the model: token embedding before the first layer (first stage) and the final norm,
// language-model head and cross-entropy loss after the last (last stage).
#pragma once

#include <vector>

#include "kernels/model/config.hpp"
#include "kernels/model/layer_state.hpp"
#include "kernels/model/params.hpp"

namespace loom::model {

// x[T, d] = embed[ids]
void embed_forward(const model_shape& m, const param_set& p, const std::vector<int>& ids, buffer& x);
// grad(embed)[ids] += dx
void embed_backward_weight(const model_shape& m, param_set& p, const std::vector<int>& ids, const buffer& dx);

struct head_state {
  buffer y;        // input (the last layer's output)
  buffer hn, inv;  // final RMSNorm output and 1/rms
  buffer dlogits;  // computed with the loss
  buffer dhn;
  double loss_sum = 0;  // summed cross-entropy of these tokens
};

// Loss of the tokens against `targets`; gradients are scaled by `scale` (1 / tokens in the step).
void head_forward(const model_shape& m, const param_set& p, const std::vector<int>& targets, float scale, head_state& s);
// dy = d loss / d y
void head_backward_input(const model_shape& m, const param_set& p, head_state& s, buffer& dy);
void head_backward_weight(const model_shape& m, param_set& p, head_state& s);

}  // namespace loom::model
