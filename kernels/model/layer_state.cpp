#include "kernels/model/layer_state.hpp"

namespace loom::model {

namespace {
template <class T>
std::size_t size_of(const std::vector<T>& v) {
  return v.capacity() * sizeof(T);
}
template <class T>
void drop(std::vector<T>& v) {
  std::vector<T>().swap(v);
}
}  // namespace

std::size_t layer_state::bytes() const {
  std::size_t b = 0;
  for (const buffer* v : {&x, &ln1, &inv1, &qkv, &ctx, &lse, &h, &u, &inv2, &scores, &topk_w, &h1, &h3, &act, &out, &sh1,
                          &sh3, &sact, &ys, &expert_out, &y, &dy, &d_expert_out, &d_topk_w, &d_rows, &dh1, &dh3,
                          &dx_rows, &dsh1, &dsh3, &du_shared, &du_moe, &dlogits, &du, &dh, &dqkv, &dln1, &dx, &in.rows})
    b += size_of(*v);
  b += size_of(topk_idx) + size_of(plan.token) + size_of(plan.slot);
  return b;
}

void layer_state::release_after_input_backward() {
  // The weight part reads: x, ln1, inv1, ctx, h, inv2, u (attention and router weights), the expert
  // inputs and intermediates with their gradients, and the shared expert's with dy; the rest can go.
  drop(qkv);
  drop(lse);
  drop(scores);
  drop(out);
  drop(ys);
  drop(expert_out);
  drop(y);
  drop(d_expert_out);
  drop(d_topk_w);
  drop(dx_rows);
  drop(du_shared);
  drop(du_moe);
  drop(dx);
}

}  // namespace loom::model
