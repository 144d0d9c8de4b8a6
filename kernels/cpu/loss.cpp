// Embedding lookup and softmax cross-entropy (see loss.hpp).
#include "kernels/cpu/loss.hpp"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstddef>

namespace loom::kernels::cpu {

namespace {

std::size_t offset(int row, int cols) {
  return static_cast<std::size_t>(row) * static_cast<std::size_t>(cols);
}

}  // namespace

void embedding_forward(const float* table, const int* ids, int rows, int dim, float* out) {
  for (int t = 0; t < rows; ++t) std::copy_n(table + offset(ids[t], dim), dim, out + offset(t, dim));
}

// Rows are added in token order, so repeated ids give the same sum on every run.
void embedding_backward(const float* dout, const int* ids, int rows, int dim, float* dtable) {
  for (int t = 0; t < rows; ++t) {
    const float* src = dout + offset(t, dim);
    float* dst = dtable + offset(ids[t], dim);
    for (int j = 0; j < dim; ++j) dst[j] += src[j];
  }
}

// loss = lse(logits) - logits[target], with lse taken after subtracting the row maximum.
double cross_entropy(const float* logits, const int* targets, int rows, int vocab, float scale,
                     float* dlogits) {
  double total = 0;
  for (int r = 0; r < rows; ++r) {
    const float* lr = logits + offset(r, vocab);
    float* dr = dlogits + offset(r, vocab);
    const int target = targets[r];
    assert(target >= 0 && target < vocab);
    const float mx = *std::max_element(lr, lr + vocab);
    double sum = 0;
    for (int j = 0; j < vocab; ++j) {
      dr[j] = std::exp(lr[j] - mx);  // unnormalised probabilities, scaled below
      sum += dr[j];
    }
    const double log_sum = std::log(sum);
    total += log_sum - (static_cast<double>(lr[target]) - mx);
    const auto coef = static_cast<float>(scale / sum);
    for (int j = 0; j < vocab; ++j) dr[j] *= coef;
    dr[target] -= scale;
  }
  return total;
}

}  // namespace loom::kernels::cpu
