// Token order <-> expert order (see permute.hpp).
#include "kernels/cpu/permute.hpp"

#include <algorithm>
#include <cassert>
#include <cstddef>

namespace loom::kernels::cpu {

namespace {

std::size_t offset(int row, int cols) {
  return static_cast<std::size_t>(row) * static_cast<std::size_t>(cols);
}

std::size_t copies(const route_plan& plan) { return plan.token.size(); }

// The (token, slot) index of copy i in [rows, k] arrays such as topk_weight.
std::size_t token_slot(const route_plan& plan, std::size_t i, int k) {
  return offset(plan.token[i], k) + static_cast<std::size_t>(plan.slot[i]);
}

// copy_of[t * k + slot] = the copy that carries (token t, slot), or -1 where the plan has none (a plan
// may hold only some experts' copies). Built once per call; lets the sums run in slot order.
std::vector<int> copy_index(const route_plan& plan, int k, int rows) {
  std::vector<int> copy_of(offset(rows, k), -1);
  for (std::size_t i = 0; i < copies(plan); ++i) {
    assert(plan.token[i] >= 0 && plan.token[i] < rows && plan.slot[i] >= 0 && plan.slot[i] < k);
    copy_of[token_slot(plan, i, k)] = static_cast<int>(i);
  }
  return copy_of;
}

// dst[t] (+)= sum over slots s of token t, in slot order, of weight(t, s) * src[copy of (t, s)].
template <typename Weight>
void gather_sum(const float* src, int cols, const route_plan& plan, int k, int rows, float* dst,
                bool accumulate, Weight weight) {
  const std::vector<int> copy_of = copy_index(plan, k, rows);
  for (int t = 0; t < rows; ++t) {
    float* out = dst + offset(t, cols);
    if (!accumulate) std::fill_n(out, cols, 0.f);
    for (int s = 0; s < k; ++s) {
      const int i = copy_of[offset(t, k) + static_cast<std::size_t>(s)];
      if (i < 0) continue;
      const float w = weight(t, s);
      const float* in = src + offset(i, cols);
      for (int c = 0; c < cols; ++c) out[c] += w * in[c];
    }
  }
}

}  // namespace

// A counting sort by expert; walking tokens and then slots in order keeps each expert's copies
// sorted by (token, slot).
route_plan make_route_plan(const int* topk_idx, int rows, int k, int experts) {
  route_plan plan;
  plan.experts = experts;
  plan.expert_offsets.assign(static_cast<std::size_t>(experts) + 1, 0);
  const std::size_t n = offset(rows, k);
  for (std::size_t i = 0; i < n; ++i) {
    assert(topk_idx[i] >= 0 && topk_idx[i] < experts);
    ++plan.expert_offsets[static_cast<std::size_t>(topk_idx[i]) + 1];
  }
  for (std::size_t e = 0; e < static_cast<std::size_t>(experts); ++e)
    plan.expert_offsets[e + 1] += plan.expert_offsets[e];
  plan.token.resize(n);
  plan.slot.resize(n);
  std::vector<int> next(plan.expert_offsets.begin(),
                        plan.expert_offsets.end() - 1);  // next free place per expert
  for (int t = 0; t < rows; ++t) {
    for (int s = 0; s < k; ++s) {
      const int e = topk_idx[offset(t, k) + static_cast<std::size_t>(s)];
      const auto at = static_cast<std::size_t>(next[static_cast<std::size_t>(e)]++);
      plan.token[at] = t;
      plan.slot[at] = s;
    }
  }
  return plan;
}

void permute_rows(const float* x, int cols, const route_plan& plan, float* out) {
  for (std::size_t i = 0; i < copies(plan); ++i)
    std::copy_n(x + offset(plan.token[i], cols), cols, out + i * static_cast<std::size_t>(cols));
}

void unpermute_weighted_sum(const float* expert_out, int cols, const route_plan& plan,
                            const float* topk_weight, int k, int rows, float* y, bool accumulate) {
  gather_sum(expert_out, cols, plan, k, rows, y, accumulate,
             [&](int t, int s) { return topk_weight[offset(t, k) + static_cast<std::size_t>(s)]; });
}

// Each copy is independent. d_topk_weight is written only for the (token, slot) pairs the plan holds.
void unpermute_backward(const float* dy, const float* expert_out, int cols, const route_plan& plan,
                        const float* topk_weight, int k, float* d_expert_out, float* d_topk_weight) {
  for (std::size_t i = 0; i < copies(plan); ++i) {
    const std::size_t ts = token_slot(plan, i, k);
    const float* dyt = dy + offset(plan.token[i], cols);
    const float* src = expert_out + i * static_cast<std::size_t>(cols);
    float* dst = d_expert_out + i * static_cast<std::size_t>(cols);
    const float w = topk_weight[ts];
    double dot = 0;
    for (int c = 0; c < cols; ++c) {
      dst[c] = w * dyt[c];
      dot += static_cast<double>(dyt[c]) * src[c];
    }
    d_topk_weight[ts] = static_cast<float>(dot);
  }
}

void permute_rows_backward(const float* d_out, int cols, const route_plan& plan, int k, int rows, float* dx,
                           bool accumulate) {
  gather_sum(d_out, cols, plan, k, rows, dx, accumulate, [](int, int) { return 1.f; });
}

}  // namespace loom::kernels::cpu
