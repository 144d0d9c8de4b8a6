#include "kernels/cuda/model/edges.hpp"

#include "kernels/cuda/loss.hpp"
#include "kernels/cuda/rmsnorm.hpp"

namespace loom::cuda::model {

namespace {

std::size_t n_of(long long a, long long b) { return static_cast<std::size_t>(a) * static_cast<std::size_t>(b); }

expected<void> alloc(const layer_call& c, dtensor& t, std::size_t bytes) {
  auto a = allocate(*c.pool, bytes, c.stream);
  if (!a) return forward_error(a);
  t = std::move(*a);
  return {};
}

}  // namespace

std::size_t device_head_state::bytes() const {
  return bytes_of(y) + bytes_of(hn) + bytes_of(inv) + bytes_of(dlogits) + bytes_of(dhn);
}

void device_head_state::retire_on(cudaStream_t stream) const {
  for (const dtensor* t : {&y, &hn, &inv, &dlogits, &dhn})
    if (*t) (*t)->retire_on(stream);
}

expected<void> embed_forward(const layer_call& c, const device_edge_params& p, const int* ids, dtensor& x) {
  const int T = c.tokens(), d = c.shape->hidden;
  if (auto e = alloc(c, x, n_of(T, d) * 2); !e) return e;
  return embedding_forward(ptr<bf16>(p.embed), ids, T, d, ptr<bf16>(x), c.stream);
}

expected<void> embed_backward_weight(const layer_call& c, const device_edge_params& p, const int* ids, const dtensor& dx) {
  return embedding_backward(ptr<bf16>(dx), ids, c.tokens(), c.shape->hidden, ptr<float>(p.g_embed), c.stream);
}

expected<void> head_forward(const layer_call& c, const device_edge_params& p, const int* targets, float scale,
                            device_head_state& s, double* loss_sum) {
  const auto& m = *c.shape;
  const int T = c.tokens(), d = m.hidden, V = m.vocab;
  if (auto e = alloc(c, s.hn, n_of(T, d) * 2); !e) return e;
  if (auto e = alloc(c, s.inv, n_of(T, 1) * 4); !e) return e;
  if (auto e = rmsnorm_forward(ptr<bf16>(s.y), ptr<bf16>(p.final_norm), ptr<bf16>(s.hn), ptr<float>(s.inv), T, d, m.norm_eps, c.stream); !e)
    return e;
  dtensor logits;
  if (auto e = alloc(c, logits, n_of(T, V) * 2); !e) return e;
  if (auto e = c.gemm->gemm(false, false, T, V, d, 1.f, ptr<bf16>(s.hn), d, ptr<bf16>(p.head), V, 0.f, ptr<bf16>(logits), V, c.stream); !e)
    return e;
  if (auto e = alloc(c, s.dlogits, n_of(T, V) * 2); !e) return e;
  return cross_entropy(ptr<bf16>(logits), targets, T, V, scale, ptr<bf16>(s.dlogits), nullptr, loss_sum, c.stream);
}

expected<void> head_backward_input(const layer_call& c, const device_edge_params& p, device_head_state& s, dtensor& dy) {
  const auto& m = *c.shape;
  const int T = c.tokens(), d = m.hidden, V = m.vocab;
  if (auto e = alloc(c, s.dhn, n_of(T, d) * 2); !e) return e;
  if (auto e = c.gemm->gemm(false, true, T, d, V, 1.f, ptr<bf16>(s.dlogits), V, ptr<bf16>(p.head), V, 0.f, ptr<bf16>(s.dhn), d, c.stream); !e)
    return e;
  if (auto e = alloc(c, dy, n_of(T, d) * 2); !e) return e;
  return rmsnorm_backward_input(ptr<bf16>(s.dhn), ptr<bf16>(s.y), ptr<bf16>(p.final_norm), ptr<float>(s.inv), ptr<bf16>(dy), T, d,
                                false, c.stream);
}

expected<void> head_backward_weight(const layer_call& c, const device_edge_params& p, device_head_state& s) {
  const auto& m = *c.shape;
  const int T = c.tokens(), d = m.hidden, V = m.vocab;
  if (auto e = c.gemm->gemm(true, false, d, V, T, 1.f, ptr<bf16>(s.hn), d, ptr<bf16>(s.dlogits), V, 1.f, ptr<float>(p.g_head), V, c.stream); !e)
    return e;
  return rmsnorm_backward_weight(ptr<bf16>(s.dhn), ptr<bf16>(s.y), ptr<float>(s.inv), ptr<float>(p.g_final_norm), T, d, c.stream);
}

}  // namespace loom::cuda::model
