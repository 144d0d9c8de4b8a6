#include "kernels/model/edges.hpp"

#include "kernels/cpu/gemm.hpp"
#include "kernels/cpu/loss.hpp"
#include "kernels/cpu/rmsnorm.hpp"

namespace loom::model {

namespace cpu = kernels::cpu;

void embed_forward(const model_shape& m, const param_set& p, const std::vector<int>& ids, buffer& x) {
  const int T = static_cast<int>(ids.size());
  x.resize(static_cast<std::size_t>(T) * m.hidden);
  cpu::embedding_forward(p.at(p.edges().embed).value.data(), ids.data(), T, m.hidden, x.data());
}

void embed_backward_weight(const model_shape& m, param_set& p, const std::vector<int>& ids, const buffer& dx) {
  auto& g = p.at(p.edges().embed).grad;
  const std::size_t d = m.hidden;
  for (std::size_t t = 0; t < ids.size(); ++t)
    for (std::size_t j = 0; j < d; ++j) g[static_cast<std::size_t>(ids[t]) * d + j] += dx[t * d + j];
}

void head_forward(const model_shape& m, const param_set& p, const std::vector<int>& targets, float scale, head_state& s) {
  const int T = static_cast<int>(targets.size()), d = m.hidden, V = m.vocab;
  s.hn.resize(static_cast<std::size_t>(T) * d);
  s.inv.resize(T);
  cpu::rmsnorm_forward(s.y.data(), p.at(p.edges().final_norm).value.data(), s.hn.data(), s.inv.data(), T, d, m.norm_eps);
  buffer logits(static_cast<std::size_t>(T) * V);
  cpu::gemm(false, false, T, V, d, 1.f, s.hn.data(), d, p.at(p.edges().head).value.data(), V, 0.f, logits.data(), V);
  s.dlogits.resize(logits.size());
  s.loss_sum = cpu::cross_entropy(logits.data(), targets.data(), T, V, scale, s.dlogits.data());
}

void head_backward_input(const model_shape& m, const param_set& p, head_state& s, buffer& dy) {
  const int T = static_cast<int>(s.inv.size()), d = m.hidden, V = m.vocab;
  s.dhn.resize(static_cast<std::size_t>(T) * d);
  cpu::gemm(false, true, T, d, V, 1.f, s.dlogits.data(), V, p.at(p.edges().head).value.data(), V, 0.f, s.dhn.data(), d);
  dy.resize(static_cast<std::size_t>(T) * d);
  cpu::rmsnorm_backward_input(s.dhn.data(), s.y.data(), p.at(p.edges().final_norm).value.data(), s.inv.data(), dy.data(), T,
                              d, false);
}

void head_backward_weight(const model_shape& m, param_set& p, head_state& s) {
  const int T = static_cast<int>(s.inv.size()), d = m.hidden, V = m.vocab;
  std::vector<float> g(static_cast<std::size_t>(d) * V);
  cpu::gemm(true, false, d, V, T, 1.f, s.hn.data(), d, s.dlogits.data(), V, 0.f, g.data(), V);
  auto& head = p.at(p.edges().head).grad;
  for (std::size_t i = 0; i < g.size(); ++i) head[i] += g[i];
  std::vector<float> gn(d, 0.f);
  cpu::rmsnorm_backward_weight(s.dhn.data(), s.y.data(), s.inv.data(), gn.data(), T, d);
  auto& norm = p.at(p.edges().final_norm).grad;
  for (int j = 0; j < d; ++j) norm[j] += gn[j];
}

}  // namespace loom::model
