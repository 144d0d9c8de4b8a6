// Causal multi-head attention core (see attention.hpp).
//
// Per (sequence, head), queries go in blocks of `block_rows`. A query block [i0, i0 + rows) only sees
// keys [0, i0 + rows), so each block is two GEMMs over that causal prefix (scores, then probabilities
// times values) with the masked corner zeroed in between; masked work is at most one block per row.
// The backward recomputes each block's probabilities from the saved log-sum-exp (as flash attention
// does) and turns them into gradients with four more GEMMs. Workspace: one or two blocks of
// block_rows x seq_len floats, allocated once per call.
#include "kernels/cpu/attention.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <vector>

#include "kernels/cpu/gemm.hpp"

namespace loom::kernels::cpu {

namespace {

constexpr int block_rows = 64;

// One (sequence, head) slice of a strided [tokens, ld] buffer: row t of the slice is at base + t * ld.
template <typename T>
struct slice {
  T* base;
  int ld;
  T* row(int t) const { return base + static_cast<std::ptrdiff_t>(t) * ld; }
};

template <typename T>
slice<T> head_slice(T* p, int ld, const attention_shape& shape, int s, int h) {
  const std::ptrdiff_t first_row = static_cast<std::ptrdiff_t>(s) * shape.seq_len;
  return {p + first_row * ld + static_cast<std::ptrdiff_t>(h) * shape.head_dim, ld};
}

template <typename T>
T* lse_slice(T* lse, const attention_shape& shape, int s, int h) {
  return lse + (static_cast<std::ptrdiff_t>(s) * shape.heads + h) * shape.seq_len;
}

// The hot row loops below run in chunks of `lanes` elements with a fixed inner trip count (then a
// scalar tail), keeping one partial max or sum per lane: that is the shape GCC's cheap -O2 vectorizer
// accepts, and the order of the sums is fixed by the code rather than by the compiler.
constexpr int lanes = 8;

// exp(x) for the shifted scores of a softmax row (x <= 0, or a rounding above it), in a form that
// vectorizes, unlike std::exp: x = n ln2 + r with |r| <= ln2 / 2, exp(r) by the Cephes polynomial
// (relative error ~1e-7), and 2^n written into the exponent bits. Below -87 the result is held at
// exp(-87) ~ 1.6e-38, which keeps 2^n a normal float and is nothing next to the row maximum's 1.
// A NaN stays NaN (the comparison is false for it), so broken inputs still show in the output.
inline float exp_shifted(float x) {
  x = x < -87.f ? -87.f : x;
  // Adding 1.5 * 2^23 rounds x log2(e) to an integer n, which then sits in the low mantissa bits.
  constexpr float round_shift = 12582912.f;
  const float shifted = x * 1.44269504f + round_shift;
  const float n = shifted - round_shift;
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;  // ln2 split in two for an exact n * ln2
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.f;
  // 2^n: n read back from those bits (unsigned, so even a NaN's bits wrap instead of being UB) and
  // moved into the exponent field.
  const std::uint32_t n_bits =
      std::bit_cast<std::uint32_t>(shifted) - std::bit_cast<std::uint32_t>(round_shift);
  return p * std::bit_cast<float>((n_bits + 127u) << 23);
}

float row_max(const float* x, int n) {
  float part[lanes];
  std::fill_n(part, lanes, x[0]);
  int j = 0;
  for (; j + lanes <= n; j += lanes)
    for (int l = 0; l < lanes; ++l) part[l] = x[j + l] > part[l] ? x[j + l] : part[l];
  for (; j < n; ++j) part[0] = x[j] > part[0] ? x[j] : part[0];
  return *std::max_element(part, part + lanes);
}

// x[j] = exp(x[j] - shift) for j < n; returns their sum.
double exp_shifted_sum(float* x, int n, float shift) {
  float part[lanes] = {};
  int j = 0;
  for (; j + lanes <= n; j += lanes)
    for (int l = 0; l < lanes; ++l) {
      x[j + l] = exp_shifted(x[j + l] - shift);
      part[l] += x[j + l];
    }
  for (; j < n; ++j) {
    x[j] = exp_shifted(x[j] - shift);
    part[0] += x[j];
  }
  return std::accumulate(part, part + lanes, 0.0);
}

void scale_row(float* x, int n, float a) {
  int j = 0;
  for (; j + lanes <= n; j += lanes)
    for (int l = 0; l < lanes; ++l) x[j + l] *= a;
  for (; j < n; ++j) x[j] *= a;
}

// ds[j] = p[j] * (ds[j] - delta), the softmax backward of one row (masked keys have p = 0).
void softmax_backward_row(const float* p, float* ds, int n, float delta) {
  int j = 0;
  for (; j + lanes <= n; j += lanes) {
    float chunk[lanes];  // every load before any store, so p and ds need no alias check
    for (int l = 0; l < lanes; ++l) chunk[l] = p[j + l] * (ds[j + l] - delta);
    for (int l = 0; l < lanes; ++l) ds[j + l] = chunk[l];
  }
  for (; j < n; ++j) ds[j] = p[j] * (ds[j] - delta);
}

// Row r of a score block holds query i0 + r, which sees keys 0 .. i0 + r. Turns the scaled scores into
// probabilities in place (zeros for the masked keys) and returns the row's log-sum-exp.
float softmax_causal_row(float* row, int visible, int keys) {
  const float mx = row_max(row, visible);
  const double sum = exp_shifted_sum(row, visible, mx);
  const auto inv = static_cast<float>(1.0 / sum);
  scale_row(row, visible, inv);
  std::fill(row + visible, row + keys, 0.f);
  return mx + static_cast<float>(std::log(sum));
}

// The backward recomputes probabilities from the saved log-sum-exp instead of renormalising.
void probabilities_causal_row(float* row, int visible, int keys, float lse) {
  exp_shifted_sum(row, visible, lse);
  std::fill(row + visible, row + keys, 0.f);
}

void zero_rows(slice<float> x, int rows, int cols) {
  for (int t = 0; t < rows; ++t) std::fill_n(x.row(t), cols, 0.f);
}

struct head_inputs {
  slice<const float> q, k, v;
};

head_inputs inputs_of(const attention_shape& shape, const float* q, const float* k, const float* v, int ld,
                      int s, int h) {
  return {head_slice(q, ld, shape, s, h), head_slice(k, ld, shape, s, h), head_slice(v, ld, shape, s, h)};
}

// scores[rows, keys] = scale * q[i0 .. i0 + rows) k[0 .. keys)^T
void block_scores(const attention_shape& shape, const head_inputs& in, int i0, int rows, int keys,
                  float* scores) {
  gemm(false, true, rows, keys, shape.head_dim, shape.scale, in.q.row(i0), in.q.ld, in.k.base, in.k.ld, 0.f,
       scores, keys);
}

void forward_head(const attention_shape& shape, const head_inputs& in, slice<float> out, float* lse,
                  float* scores) {
  const int d = shape.head_dim;
  for (int i0 = 0; i0 < shape.seq_len; i0 += block_rows) {
    const int rows = std::min(block_rows, shape.seq_len - i0);
    const int keys = i0 + rows;
    block_scores(shape, in, i0, rows, keys, scores);
    for (int r = 0; r < rows; ++r)
      lse[i0 + r] = softmax_causal_row(scores + static_cast<std::ptrdiff_t>(r) * keys, i0 + r + 1, keys);
    gemm(false, false, rows, d, keys, 1.f, scores, keys, in.v.base, in.v.ld, 0.f, out.row(i0), out.ld);
  }
}

struct head_grads {
  slice<const float> out, dout;
  slice<float> dq, dk, dv;
};

// With P the probabilities, dP = dO V^T, D_i = dot(dO_i, O_i) and dS = P * (dP - D):
//   dV += P^T dO, dQ = scale dS K, dK += scale dS^T Q.
void backward_head(const attention_shape& shape, const head_inputs& in, const head_grads& g, const float* lse,
                   float* p, float* ds) {
  const int d = shape.head_dim;
  zero_rows(g.dk, shape.seq_len, d);
  zero_rows(g.dv, shape.seq_len, d);
  for (int i0 = 0; i0 < shape.seq_len; i0 += block_rows) {
    const int rows = std::min(block_rows, shape.seq_len - i0);
    const int keys = i0 + rows;
    block_scores(shape, in, i0, rows, keys, p);
    for (int r = 0; r < rows; ++r)
      probabilities_causal_row(p + static_cast<std::ptrdiff_t>(r) * keys, i0 + r + 1, keys, lse[i0 + r]);
    gemm(false, true, rows, keys, d, 1.f, g.dout.row(i0), g.dout.ld, in.v.base, in.v.ld, 0.f, ds, keys);
    for (int r = 0; r < rows; ++r) {
      const float* o = g.out.row(i0 + r);
      const float* dout = g.dout.row(i0 + r);
      double dot = 0;
      for (int c = 0; c < d; ++c) dot += static_cast<double>(o[c]) * dout[c];
      const auto delta = static_cast<float>(dot);
      softmax_backward_row(p + static_cast<std::ptrdiff_t>(r) * keys,
                           ds + static_cast<std::ptrdiff_t>(r) * keys, keys, delta);
    }
    gemm(true, false, keys, d, rows, 1.f, p, keys, g.dout.row(i0), g.dout.ld, 1.f, g.dv.base, g.dv.ld);
    gemm(false, false, rows, d, keys, shape.scale, ds, keys, in.k.base, in.k.ld, 0.f, g.dq.row(i0), g.dq.ld);
    gemm(true, false, keys, d, rows, shape.scale, ds, keys, in.q.row(i0), in.q.ld, 1.f, g.dk.base, g.dk.ld);
  }
}

std::size_t workspace_floats(const attention_shape& shape) {
  return static_cast<std::size_t>(std::min(block_rows, shape.seq_len)) *
         static_cast<std::size_t>(shape.seq_len);
}

}  // namespace

void attention_forward(const attention_shape& shape, const float* q, const float* k, const float* v,
                       int ld_qkv, float* out, int ld_out, float* lse) {
  if (shape.seq_len <= 0 || shape.head_dim <= 0) return;
  std::vector<float> scores(workspace_floats(shape));
  for (int s = 0; s < shape.seqs; ++s) {
    for (int h = 0; h < shape.heads; ++h) {
      forward_head(shape, inputs_of(shape, q, k, v, ld_qkv, s, h), head_slice(out, ld_out, shape, s, h),
                   lse_slice(lse, shape, s, h), scores.data());
    }
  }
}

void attention_backward(const attention_shape& shape, const float* q, const float* k, const float* v,
                        int ld_qkv, const float* out, int ld_out, const float* dout, int ld_dout,
                        const float* lse, float* dq, float* dk, float* dv, int ld_dqkv) {
  if (shape.seq_len <= 0 || shape.head_dim <= 0) return;
  std::vector<float> p(workspace_floats(shape));
  std::vector<float> ds(workspace_floats(shape));
  for (int s = 0; s < shape.seqs; ++s) {
    for (int h = 0; h < shape.heads; ++h) {
      const head_grads g{head_slice(out, ld_out, shape, s, h), head_slice(dout, ld_dout, shape, s, h),
                         head_slice(dq, ld_dqkv, shape, s, h), head_slice(dk, ld_dqkv, shape, s, h),
                         head_slice(dv, ld_dqkv, shape, s, h)};
      backward_head(shape, inputs_of(shape, q, k, v, ld_qkv, s, h), g, lse_slice(lse, shape, s, h), p.data(),
                    ds.data());
    }
  }
}

}  // namespace loom::kernels::cpu
