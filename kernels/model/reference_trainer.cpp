#include "kernels/model/reference_trainer.hpp"

#include <cmath>

#include "kernels/model/edges.hpp"
#include "kernels/model/moe_block.hpp"
#include "kernels/model/optimizer.hpp"
#include "kernels/model/synthetic_data.hpp"

namespace loom::model {

namespace {

// DeepSeek-V3's auxiliary-loss-free balancing: nudge each expert's selection bias toward the mean load.
void update_router_bias(param_set& p, int layer, const std::vector<double>& load, float rate) {
  auto& bias = p.at(p.layer(layer).router_bias).value;
  double mean = 0;
  for (double l : load) mean += l;
  mean /= static_cast<double>(load.size());
  for (std::size_t e = 0; e < load.size(); ++e) bias[e] += rate * static_cast<float>((mean > load[e]) - (mean < load[e]));
}

}  // namespace

reference_result train_reference(const reference_config& cfg) {
  const model_shape& m = cfg.shape;
  const ep_layout single{1, 0};
  const slot_map slots = slot_map::identity(m.experts, 1);
  const std::vector<std::vector<int>> experts(cfg.layers, slots.local_experts(0));
  reference_result out{{}, {}, param_set(m, experts, 0, cfg.layers, true, true, cfg.seed)};
  param_set& P = out.params;
  std::vector<float> scratch;
  const double tokens = static_cast<double>(cfg.microbatches) * cfg.microbatch_size * m.seq_len;

  for (int step = 0; step < cfg.steps; ++step) {
    P.zero_grads();
    double loss = 0;
    std::vector<std::vector<double>> load(cfg.layers, std::vector<double>(m.experts, 0.0));
    for (int mb = 0; mb < cfg.microbatches; ++mb) {
      auto data = synthetic_tokens(cfg.seed, step, mb, 0, cfg.microbatch_size, m.seq_len, m.vocab);
      std::vector<layer_state> states(cfg.layers);
      std::vector<layer_ctx> ctx(cfg.layers);
      for (int l = 0; l < cfg.layers; ++l)
        ctx[l] = {&m, single, &slots, cfg.microbatch_size, 0, token_seed(cfg.seed, step, mb, l), &P, l, &scratch};
      embed_forward(m, P, data.ids, states[0].x);
      for (int l = 0; l < cfg.layers; ++l) {
        layer_state& s = states[l];
        attention_forward(ctx[l], s);
        dispatch_receive(ctx[l], s, dispatch_send(ctx[l], s));
        mlp_forward(ctx[l], s);
        combine_receive(ctx[l], s, combine_send(ctx[l], s));
        count_expert_load(ctx[l], s, load[l]);
        if (l + 1 < cfg.layers) states[l + 1].x = s.y;
      }
      head_state head;
      head.y = states.back().y;
      head_forward(m, P, data.targets, static_cast<float>(1.0 / tokens), head);
      loss += head.loss_sum;
      head_backward_input(m, P, head, states.back().dy);
      head_backward_weight(m, P, head);
      for (int l = cfg.layers - 1; l >= 0; --l) {
        layer_state& s = states[l];
        combine_backward_receive(ctx[l], s, combine_backward_send(ctx[l], s));
        mlp_backward_input(ctx[l], s);
        dispatch_backward_receive(ctx[l], s, dispatch_backward_send(ctx[l], s));
        attention_backward_input(ctx[l], s);
        mlp_backward_weight(ctx[l], s);
        attention_backward_weight(ctx[l], s);
        if (l > 0) states[l - 1].dy = s.dx;
      }
      embed_backward_weight(m, P, data.ids, states[0].dx);
    }
    out.loss.push_back(loss / tokens);
    out.grad_norm.push_back(std::sqrt(grad_square_sum(P, [](const param&) { return true; })));
    apply_adamw(P, cfg.adamw, step + 1);
    if (m.gate == gating::sigmoid)
      for (int l = 0; l < cfg.layers; ++l) update_router_bias(P, l, load[l], cfg.bias_update_rate);
  }
  return out;
}

}  // namespace loom::model
