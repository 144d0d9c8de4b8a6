// The MoE router (see router.hpp).
#include "kernels/cpu/router.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numeric>
#include <vector>

namespace loom::kernels::cpu {

namespace {

std::size_t offset(int row, int cols) {
  return static_cast<std::size_t>(row) * static_cast<std::size_t>(cols);
}

float sigmoid(float x) {
  if (x >= 0.f) return 1.f / (1.f + std::exp(-x));
  const float e = std::exp(x);
  return e / (1.f + e);
}

void softmax_row(const float* logits, int n, float* p) {
  const float mx = *std::max_element(logits, logits + n);
  double sum = 0;
  for (int e = 0; e < n; ++e) {
    p[e] = std::exp(logits[e] - mx);
    sum += p[e];
  }
  const auto inv = static_cast<float>(1.0 / sum);
  for (int e = 0; e < n; ++e) p[e] *= inv;
}

// The k best experts by key, best first; equal keys go to the lower index. `order` has one entry per expert.
void select_top_k(const float* key, int k, int* out, std::vector<int>& order) {
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [key](int a, int b) { return key[a] > key[b] || (key[a] == key[b] && a < b); });
  std::copy_n(order.begin(), k, out);
}

}  // namespace

void router_forward(gating g, const float* logits, const float* bias, int rows, int experts, int k,
                    int* topk_idx, float* topk_weight, float* scores) {
  std::vector<int> order(static_cast<std::size_t>(experts));
  std::vector<float> key(static_cast<std::size_t>(experts));  // the selection score s + bias (sigmoid)
  for (int r = 0; r < rows; ++r) {
    const float* lr = logits + offset(r, experts);
    float* sr = scores + offset(r, experts);
    int* idx = topk_idx + offset(r, k);
    float* wr = topk_weight + offset(r, k);
    if (g == gating::softmax) {
      // The header defines the softmax selection on p alone: bias is not used here.
      softmax_row(lr, experts, sr);
      select_top_k(sr, k, idx, order);
      for (int j = 0; j < k; ++j) wr[j] = sr[idx[j]];
      continue;
    }
    for (int e = 0; e < experts; ++e) {
      sr[e] = sigmoid(lr[e]);
      key[static_cast<std::size_t>(e)] = bias != nullptr ? sr[e] + bias[e] : sr[e];
    }
    select_top_k(key.data(), k, idx, order);
    double sum = 0;
    for (int j = 0; j < k; ++j) sum += sr[idx[j]];
    for (int j = 0; j < k; ++j) wr[j] = static_cast<float>(sr[idx[j]] / sum);
  }
}

// softmax: w_j = p_{c_j}, so dlogit_e = p_e (g_e - sum_j dw_j p_{c_j}), g_e = dw_j where c_j = e, else 0.
// sigmoid: w_j = s_{c_j} / S with S = sum_j s_{c_j}, so ds_{c_j} = (dw_j - sum_i dw_i w_i) / S,
//   dlogit = ds * s (1 - s) for chosen experts and 0 for the others.
void router_backward(gating g, const float* scores, const int* topk_idx, const float* topk_weight,
                     const float* d_topk_weight, int rows, int experts, int k, float* dlogits) {
  for (int r = 0; r < rows; ++r) {
    const float* sr = scores + offset(r, experts);
    const int* idx = topk_idx + offset(r, k);
    const float* wr = topk_weight + offset(r, k);
    const float* dwr = d_topk_weight + offset(r, k);
    float* dr = dlogits + offset(r, experts);
    std::fill_n(dr, experts, 0.f);
    if (g == gating::softmax) {
      double dot = 0;
      for (int j = 0; j < k; ++j) dot += static_cast<double>(dwr[j]) * sr[idx[j]];
      for (int j = 0; j < k; ++j) dr[idx[j]] += dwr[j];
      for (int e = 0; e < experts; ++e) dr[e] = sr[e] * (dr[e] - static_cast<float>(dot));
      continue;
    }
    double dot = 0;
    double sum = 0;
    for (int j = 0; j < k; ++j) {
      dot += static_cast<double>(dwr[j]) * wr[j];
      sum += sr[idx[j]];
    }
    for (int j = 0; j < k; ++j) {
      const float s = sr[idx[j]];
      const auto ds = static_cast<float>((dwr[j] - dot) / sum);
      dr[idx[j]] += ds * s * (1.f - s);
    }
  }
}

void router_update_bias(float* bias, const float* load, int experts, float rate) {
  if (experts <= 0) return;
  double mean = 0;
  for (int e = 0; e < experts; ++e) mean += load[e];
  mean /= experts;
  for (int e = 0; e < experts; ++e) {
    const double diff = mean - load[e];
    const float sign = diff > 0 ? 1.f : (diff < 0 ? -1.f : 0.f);
    bias[e] += rate * sign;
  }
}

}  // namespace loom::kernels::cpu
