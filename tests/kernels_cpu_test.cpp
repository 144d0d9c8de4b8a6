// The float32 CPU kernels against straightforward double-precision references written here, and
// their backward passes against central finite differences of L = sum(dy * f(x)) computed in double.
#include <algorithm>
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstddef>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <tuple>
#include <vector>

#include "kernels/cpu/adamw.hpp"
#include "kernels/cpu/attention.hpp"
#include "kernels/cpu/gemm.hpp"
#include "kernels/cpu/loss.hpp"
#include "kernels/cpu/permute.hpp"
#include "kernels/cpu/rmsnorm.hpp"
#include "kernels/cpu/router.hpp"
#include "kernels/cpu/swiglu.hpp"

namespace kc = loom::kernels::cpu;

namespace {

using vecf = std::vector<float>;
using vecd = std::vector<double>;
using rng_t = std::mt19937_64;

constexpr double forward_tol = 1e-5;   // ||out - ref|| / ||ref|| for forwards
constexpr double backward_tol = 1e-5;  // the same against finite differences
const float nan_f = std::numeric_limits<float>::quiet_NaN();

std::size_t sz(int n) { return static_cast<std::size_t>(n); }
std::size_t sz(int a, int b) { return sz(a) * sz(b); }

vecf random_vec(rng_t& rng, std::size_t n, float lo = -1.f, float hi = 1.f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  vecf v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

std::vector<int> random_ints(rng_t& rng, std::size_t n, int lo, int hi) {
  std::uniform_int_distribution<int> dist(lo, hi);
  std::vector<int> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

vecd to_double(const vecf& v) { return {v.begin(), v.end()}; }

vecd plus(const vecf& a, const vecd& b) {
  vecd r(b.size());
  for (std::size_t i = 0; i < b.size(); ++i) r[i] = a[i] + b[i];
  return r;
}

// ||got - want|| / ||want||; the plain norm of the difference when want is zero.
double rel_err(const vecf& got, const vecd& want) {
  BOOST_TEST_REQUIRE(got.size() == want.size());
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    diff += (got[i] - want[i]) * (got[i] - want[i]);
    norm += want[i] * want[i];
  }
  if (std::isnan(diff)) return std::numeric_limits<double>::infinity();
  return norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff);
}

#define CHECK_CLOSE(got, want, tol)                                                             \
  do {                                                                                          \
    const double err_ = rel_err(got, want);                                                     \
    BOOST_TEST(err_ < (tol), #got " vs " #want ": relative error " << err_ << " >= " << (tol)); \
  } while (0)

// Central differences of f at x in every coordinate. f is smooth double code, so h = 1e-5 leaves
// errors around 1e-10, far below the float kernels' rounding.
vecd numeric_grad(const std::function<double(const vecd&)>& f, vecd x, double h = 1e-5) {
  vecd g(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + h;
    const double up = f(x);
    x[i] = saved - h;
    const double down = f(x);
    x[i] = saved;
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

double dot(const vecf& a, const vecd& b) {
  double s = 0;
  for (std::size_t i = 0; i < b.size(); ++i) s += a[i] * b[i];
  return s;
}

// C = op(A) op(B), row-major, in double.
vecd matmul(bool ta, bool tb, int m, int n, int k, const double* a, int lda, const double* b, int ldb) {
  vecd c(sz(m, n));
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      double s = 0;
      for (int l = 0; l < k; ++l) {
        const double av = ta ? a[sz(l, lda) + sz(i)] : a[sz(i, lda) + sz(l)];
        const double bv = tb ? b[sz(j, ldb) + sz(l)] : b[sz(l, ldb) + sz(j)];
        s += av * bv;
      }
      c[sz(i, n) + sz(j)] = s;
    }
  return c;
}

double sigmoid_d(double x) { return 1 / (1 + std::exp(-x)); }
double silu_d(double x) { return x * sigmoid_d(x); }

}  // namespace

// ---------------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_SUITE(cpu_gemm)

BOOST_AUTO_TEST_CASE(matches_double_reference_all_transposes) {
  rng_t rng(101);
  kc::set_blas_threads(1);
  const std::vector<std::tuple<int, int, int>> shapes = {{1, 1, 1},    {7, 5, 3},   {33, 17, 65},
                                                         {64, 128, 1}, {1, 90, 40}, {50, 1, 9}};
  for (const auto& shape : shapes)
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb) {
        const int m = std::get<0>(shape), n = std::get<1>(shape), k = std::get<2>(shape);
        BOOST_TEST_CONTEXT("m=" << m << " n=" << n << " k=" << k << " ta=" << ta << " tb=" << tb) {
          // Padded leading dimensions, so strides are really used.
          const int a_rows = ta ? k : m, a_cols = ta ? m : k, lda = a_cols + 3;
          const int b_rows = tb ? n : k, b_cols = tb ? k : n, ldb = b_cols + 2;
          const int ldc = n + 1;
          const vecf a = random_vec(rng, sz(a_rows, lda));
          const vecf b = random_vec(rng, sz(b_rows, ldb));
          const vecd ad = to_double(a), bd = to_double(b);
          const vecd prod = matmul(ta, tb, m, n, k, ad.data(), lda, bd.data(), ldb);
          const float alpha = 0.75f;

          vecf c(sz(m, ldc), nan_f);  // beta = 0: garbage must not leak through
          kc::gemm(ta, tb, m, n, k, alpha, a.data(), lda, b.data(), ldb, 0.f, c.data(), ldc);
          vecf got(sz(m, n));
          vecd want(sz(m, n));
          for (int i = 0; i < m; ++i)
            for (int j = 0; j < n; ++j) {
              got[sz(i, n) + sz(j)] = c[sz(i, ldc) + sz(j)];
              want[sz(i, n) + sz(j)] = alpha * prod[sz(i, n) + sz(j)];
            }
          CHECK_CLOSE(got, want, forward_tol);
          for (int i = 0; i < m; ++i) BOOST_TEST(std::isnan(c[sz(i, ldc) + sz(n)]));  // padding untouched

          const vecf c0 = random_vec(rng, sz(m, ldc));  // beta = 1 accumulates
          c = c0;
          kc::gemm(ta, tb, m, n, k, alpha, a.data(), lda, b.data(), ldb, 1.f, c.data(), ldc);
          for (int i = 0; i < m; ++i)
            for (int j = 0; j < n; ++j) {
              got[sz(i, n) + sz(j)] = c[sz(i, ldc) + sz(j)];
              want[sz(i, n) + sz(j)] = c0[sz(i, ldc) + sz(j)] + alpha * prod[sz(i, n) + sz(j)];
            }
          CHECK_CLOSE(got, want, forward_tol);
        }
      }
}

BOOST_AUTO_TEST_CASE(empty_inner_dimension_scales_c) {
  vecf c(6, nan_f);
  kc::gemm(false, false, 2, 3, 0, 1.f, nullptr, 1, nullptr, 3, 0.f, c.data(), 3);
  for (float x : c) BOOST_TEST(x == 0.f);
  c = {1, 2, 3, 4, 5, 6};
  kc::gemm(false, false, 2, 3, 0, 1.f, nullptr, 1, nullptr, 3, 1.f, c.data(), 3);
  BOOST_TEST(c == (vecf{1, 2, 3, 4, 5, 6}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(thread_count_does_not_change_the_result) {
  rng_t rng(102);
  const int m = 96, n = 80, k = 70;
  const vecf a = random_vec(rng, sz(m, k)), b = random_vec(rng, sz(k, n));
  vecf c1(sz(m, n)), c2(sz(m, n));
  kc::set_blas_threads(2);
  kc::gemm(false, false, m, n, k, 1.f, a.data(), k, b.data(), n, 0.f, c1.data(), n);
  kc::set_blas_threads(1);
  kc::gemm(false, false, m, n, k, 1.f, a.data(), k, b.data(), n, 0.f, c2.data(), n);
  CHECK_CLOSE(c1, to_double(c2), 1e-6);
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------------

namespace {

vecd rmsnorm_ref(const vecd& x, const vecd& gamma, int rows, int dim, double eps, vecd* inv_rms = nullptr) {
  vecd y(x.size());
  if (inv_rms) inv_rms->assign(sz(rows), 0);
  for (int r = 0; r < rows; ++r) {
    double ss = 0;
    for (int j = 0; j < dim; ++j) ss += x[sz(r, dim) + sz(j)] * x[sz(r, dim) + sz(j)];
    const double inv = 1 / std::sqrt(ss / dim + eps);
    if (inv_rms) (*inv_rms)[sz(r)] = inv;
    for (int j = 0; j < dim; ++j) y[sz(r, dim) + sz(j)] = x[sz(r, dim) + sz(j)] * inv * gamma[sz(j)];
  }
  return y;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(cpu_rmsnorm)

const std::vector<std::pair<int, int>> rmsnorm_shapes = {{1, 1}, {1, 8}, {5, 37}, {17, 64}, {3, 256}};

BOOST_AUTO_TEST_CASE(forward_matches_reference) {
  rng_t rng(201);
  const float eps = 1e-5f;
  for (const auto& shape : rmsnorm_shapes) {
    const int rows = std::get<0>(shape), dim = std::get<1>(shape);
    BOOST_TEST_CONTEXT("rows=" << rows << " dim=" << dim) {
      const vecf x = random_vec(rng, sz(rows, dim), -2.f, 2.f);
      const vecf gamma = random_vec(rng, sz(dim), 0.5f, 1.5f);
      vecf y(x.size(), nan_f), inv(sz(rows), nan_f);
      kc::rmsnorm_forward(x.data(), gamma.data(), y.data(), inv.data(), rows, dim, eps);
      vecd inv_ref;
      const vecd y_ref = rmsnorm_ref(to_double(x), to_double(gamma), rows, dim, eps, &inv_ref);
      CHECK_CLOSE(y, y_ref, forward_tol);
      CHECK_CLOSE(inv, inv_ref, forward_tol);
    }
  }
}

// dim = 1 is left out here: there y = sign(x) gamma up to eps, and dx is the O(eps) difference of two
// O(1/|x|) terms, which float inputs cannot resolve to 1e-5 (nor could any float kernel).
BOOST_AUTO_TEST_CASE(backward_matches_finite_differences) {
  rng_t rng(202);
  const float eps = 1e-5f;
  const std::vector<std::pair<int, int>> shapes = {{1, 2}, {1, 8}, {5, 37}, {17, 64}, {3, 256}};
  for (const auto& shape : shapes) {
    const int rows = std::get<0>(shape), dim = std::get<1>(shape);
    BOOST_TEST_CONTEXT("rows=" << rows << " dim=" << dim) {
      const vecf x = random_vec(rng, sz(rows, dim), -2.f, 2.f);
      const vecf gamma = random_vec(rng, sz(dim), 0.5f, 1.5f);
      const vecf dy = random_vec(rng, x.size());
      vecf y(x.size()), inv(sz(rows));
      kc::rmsnorm_forward(x.data(), gamma.data(), y.data(), inv.data(), rows, dim, eps);

      const vecd xd = to_double(x), gd = to_double(gamma);
      const vecd dx_ref =
          numeric_grad([&](const vecd& xv) { return dot(dy, rmsnorm_ref(xv, gd, rows, dim, eps)); }, xd);
      const vecd dgamma_ref =
          numeric_grad([&](const vecd& gv) { return dot(dy, rmsnorm_ref(xd, gv, rows, dim, eps)); }, gd);

      vecf dx(x.size(), nan_f);
      kc::rmsnorm_backward_input(dy.data(), x.data(), gamma.data(), inv.data(), dx.data(), rows, dim, false);
      CHECK_CLOSE(dx, dx_ref, backward_tol);

      const vecf dx0 = random_vec(rng, x.size());
      dx = dx0;
      kc::rmsnorm_backward_input(dy.data(), x.data(), gamma.data(), inv.data(), dx.data(), rows, dim, true);
      CHECK_CLOSE(dx, plus(dx0, dx_ref), backward_tol);

      const vecf dgamma0 = random_vec(rng, gamma.size());  // the weight part always accumulates
      vecf dgamma = dgamma0;
      kc::rmsnorm_backward_weight(dy.data(), x.data(), inv.data(), dgamma.data(), rows, dim);
      vecf dgamma_only(gamma.size(), 0.f);
      kc::rmsnorm_backward_weight(dy.data(), x.data(), inv.data(), dgamma_only.data(), rows, dim);
      CHECK_CLOSE(dgamma_only, dgamma_ref, backward_tol);
      CHECK_CLOSE(dgamma, plus(dgamma0, dgamma_ref), backward_tol);
    }
  }
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------------

namespace {

// q, k, v as double pointers with a shared row stride; out [tokens, ld_out] at the heads' columns
// (padding left 0); lse [seqs * heads * seq_len].
vecd attention_ref(const kc::attention_shape& sh, const double* q, const double* k, const double* v, int ld,
                   int ld_out, vecd* lse = nullptr) {
  const int tokens = sh.seqs * sh.seq_len, d = sh.head_dim;
  vecd out(sz(tokens, ld_out), 0.0);
  if (lse) lse->assign(sz(sh.seqs * sh.heads, sh.seq_len), 0.0);
  vecd p(sz(sh.seq_len));
  for (int s = 0; s < sh.seqs; ++s)
    for (int h = 0; h < sh.heads; ++h)
      for (int i = 0; i < sh.seq_len; ++i) {
        const int ti = s * sh.seq_len + i;
        double mx = -std::numeric_limits<double>::infinity();
        for (int j = 0; j <= i; ++j) {
          const int tj = s * sh.seq_len + j;
          double sc = 0;
          for (int c = 0; c < d; ++c) sc += q[sz(ti, ld) + sz(h * d + c)] * k[sz(tj, ld) + sz(h * d + c)];
          p[sz(j)] = sc * sh.scale;
          mx = std::max(mx, p[sz(j)]);
        }
        double sum = 0;
        for (int j = 0; j <= i; ++j) sum += std::exp(p[sz(j)] - mx);
        if (lse) (*lse)[sz((s * sh.heads + h) * sh.seq_len + i)] = mx + std::log(sum);
        for (int j = 0; j <= i; ++j) {
          const int tj = s * sh.seq_len + j;
          const double w = std::exp(p[sz(j)] - mx) / sum;
          for (int c = 0; c < d; ++c)
            out[sz(ti, ld_out) + sz(h * d + c)] += w * v[sz(tj, ld) + sz(h * d + c)];
        }
      }
  return out;
}

// The heads' columns of a [tokens, ld] buffer, packed to [tokens, hidden].
template <typename T>
std::vector<T> head_columns(const std::vector<T>& buf, int tokens, int hidden, int ld, int first_col = 0) {
  std::vector<T> r(sz(tokens, hidden));
  for (int t = 0; t < tokens; ++t)
    for (int c = 0; c < hidden; ++c) r[sz(t, hidden) + sz(c)] = buf[sz(t, ld) + sz(first_col + c)];
  return r;
}

kc::attention_shape make_shape(int seqs, int seq_len, int heads, int head_dim) {
  return {seqs, seq_len, heads, head_dim, static_cast<float>(1.0 / std::sqrt(head_dim))};
}

}  // namespace

BOOST_AUTO_TEST_SUITE(cpu_attention)

BOOST_AUTO_TEST_CASE(forward_matches_reference) {
  rng_t rng(301);
  // seq_len 1, odd sizes, more than one query block (64), and the head sizes the model uses.
  const std::vector<std::tuple<int, int, int, int>> shapes = {
      {1, 1, 1, 1}, {2, 9, 3, 5}, {1, 65, 2, 16}, {3, 130, 2, 8}, {1, 200, 1, 64}, {2, 150, 2, 128}};
  for (const auto& shape : shapes) {
    const int seqs = std::get<0>(shape), seq_len = std::get<1>(shape), heads = std::get<2>(shape),
              d = std::get<3>(shape);
    BOOST_TEST_CONTEXT("seqs=" << seqs << " seq_len=" << seq_len << " heads=" << heads << " d=" << d) {
      const auto sh = make_shape(seqs, seq_len, heads, d);
      const int tokens = seqs * seq_len, hidden = heads * d, ld = 3 * hidden, ld_out = hidden + 3;
      // Inputs spread enough that the softmax is far from uniform.
      const vecf qkv = random_vec(rng, sz(tokens, ld), -2.f, 2.f);
      vecf out(sz(tokens, ld_out), 1234.5f);
      vecf lse(sz(seqs * heads, seq_len), nan_f);
      kc::attention_forward(sh, qkv.data(), qkv.data() + hidden, qkv.data() + 2 * hidden, ld, out.data(),
                            ld_out, lse.data());
      const vecd qd = to_double(qkv);
      vecd lse_ref;
      const vecd out_ref =
          attention_ref(sh, qd.data(), qd.data() + hidden, qd.data() + 2 * hidden, ld, ld_out, &lse_ref);
      CHECK_CLOSE(head_columns(out, tokens, hidden, ld_out), head_columns(out_ref, tokens, hidden, ld_out),
                  forward_tol);
      CHECK_CLOSE(lse, lse_ref, forward_tol);
      for (int t = 0; t < tokens; ++t)
        for (int c = hidden; c < ld_out; ++c) BOOST_TEST_REQUIRE(out[sz(t, ld_out) + sz(c)] == 1234.5f);
    }
  }
}

// dq, dk, dv against finite differences of L = sum(dout * attention(q, k, v)) over a packed qkv buffer,
// and with separate padded q, k, v and dq, dk, dv buffers.
BOOST_AUTO_TEST_CASE(backward_matches_finite_differences_packed) {
  rng_t rng(302);
  const std::vector<std::tuple<int, int, int, int>> shapes = {{1, 1, 1, 1}, {2, 9, 3, 5}, {1, 70, 2, 4}};
  for (const auto& shape : shapes) {
    const int seqs = std::get<0>(shape), seq_len = std::get<1>(shape), heads = std::get<2>(shape),
              d = std::get<3>(shape);
    BOOST_TEST_CONTEXT("seqs=" << seqs << " seq_len=" << seq_len << " heads=" << heads << " d=" << d) {
      const auto sh = make_shape(seqs, seq_len, heads, d);
      const int tokens = seqs * seq_len, hidden = heads * d, ld = 3 * hidden;
      const vecf qkv = random_vec(rng, sz(tokens, ld), -1.5f, 1.5f);
      const vecf dout = random_vec(rng, sz(tokens, hidden));
      vecf out(sz(tokens, hidden)), lse(sz(seqs * heads, seq_len));
      kc::attention_forward(sh, qkv.data(), qkv.data() + hidden, qkv.data() + 2 * hidden, ld, out.data(),
                            hidden, lse.data());
      vecf dqkv(qkv.size(), nan_f);
      kc::attention_backward(sh, qkv.data(), qkv.data() + hidden, qkv.data() + 2 * hidden, ld, out.data(),
                             hidden, dout.data(), hidden, lse.data(), dqkv.data(), dqkv.data() + hidden,
                             dqkv.data() + 2 * hidden, ld);
      const vecd want = numeric_grad(
          [&](const vecd& x) {
            return dot(dout,
                       attention_ref(sh, x.data(), x.data() + hidden, x.data() + 2 * hidden, ld, hidden));
          },
          to_double(qkv));
      CHECK_CLOSE(dqkv, want, backward_tol);
    }
  }
}

BOOST_AUTO_TEST_CASE(backward_matches_finite_differences_strided) {
  rng_t rng(303);
  const auto sh = make_shape(2, 67, 2, 3);
  const int tokens = 2 * 67, hidden = 6, ld = hidden + 2, ld_out = hidden + 1, ld_dout = hidden + 4,
            ld_d = hidden + 1;
  const vecf q = random_vec(rng, sz(tokens, ld), -1.5f, 1.5f),
             k = random_vec(rng, sz(tokens, ld), -1.5f, 1.5f), v = random_vec(rng, sz(tokens, ld));
  const vecf dout = random_vec(rng, sz(tokens, ld_dout));
  vecf out(sz(tokens, ld_out), nan_f), lse(sz(2 * 2, 67));
  kc::attention_forward(sh, q.data(), k.data(), v.data(), ld, out.data(), ld_out, lse.data());
  const float sentinel = 1234.5f;  // the padding columns of the gradients must stay untouched
  vecf dq(sz(tokens, ld_d), nan_f), dk(sz(tokens, ld_d), nan_f), dv(sz(tokens, ld_d), nan_f);
  for (auto* g : {&dq, &dk, &dv})
    for (int t = 0; t < tokens; ++t) (*g)[sz(t, ld_d) + sz(hidden)] = sentinel;
  kc::attention_backward(sh, q.data(), k.data(), v.data(), ld, out.data(), ld_out, dout.data(), ld_dout,
                         lse.data(), dq.data(), dk.data(), dv.data(), ld_d);

  const vecd qd = to_double(q), kd = to_double(k), vd = to_double(v);
  const vecf dout_packed = head_columns(dout, tokens, hidden, ld_dout);
  auto loss = [&](const vecd& qx, const vecd& kx, const vecd& vx) {
    return dot(dout_packed, head_columns(attention_ref(sh, qx.data(), kx.data(), vx.data(), ld, hidden),
                                         tokens, hidden, hidden));
  };
  const vecd dq_ref = numeric_grad([&](const vecd& x) { return loss(x, kd, vd); }, qd);
  const vecd dk_ref = numeric_grad([&](const vecd& x) { return loss(qd, x, vd); }, kd);
  const vecd dv_ref = numeric_grad([&](const vecd& x) { return loss(qd, kd, x); }, vd);
  CHECK_CLOSE(head_columns(dq, tokens, hidden, ld_d), head_columns(dq_ref, tokens, hidden, ld), backward_tol);
  CHECK_CLOSE(head_columns(dk, tokens, hidden, ld_d), head_columns(dk_ref, tokens, hidden, ld), backward_tol);
  CHECK_CLOSE(head_columns(dv, tokens, hidden, ld_d), head_columns(dv_ref, tokens, hidden, ld), backward_tol);
  for (auto* g : {&dq, &dk, &dv})
    for (int t = 0; t < tokens; ++t) BOOST_TEST_REQUIRE((*g)[sz(t, ld_d) + sz(hidden)] == sentinel);
}

// Changing token j's key and value leaves every earlier output of its sequence bit for bit as it was,
// and changes token j's own output.
BOOST_AUTO_TEST_CASE(causal_mask_holds) {
  rng_t rng(304);
  const int seqs = 2, seq_len = 100, heads = 2, d = 8, hidden = heads * d, ld = 3 * hidden,
            tokens = seqs * seq_len;
  const auto sh = make_shape(seqs, seq_len, heads, d);
  const vecf qkv = random_vec(rng, sz(tokens, ld));
  vecf out(sz(tokens, hidden)), lse(sz(seqs * heads, seq_len));
  kc::attention_forward(sh, qkv.data(), qkv.data() + hidden, qkv.data() + 2 * hidden, ld, out.data(), hidden,
                        lse.data());
  for (int j : {0, 1, 63, 64, 65, 99}) {
    BOOST_TEST_CONTEXT("changed position " << j) {
      vecf changed = qkv;
      const int tj = seq_len + j;  // in the second sequence
      for (int c = hidden; c < 3 * hidden; ++c) changed[sz(tj, ld) + sz(c)] += 5.f;
      vecf out2(out.size()), lse2(lse.size());
      kc::attention_forward(sh, changed.data(), changed.data() + hidden, changed.data() + 2 * hidden, ld,
                            out2.data(), hidden, lse2.data());
      for (int t = 0; t < tokens; ++t) {
        const bool earlier = t < seq_len || t < tj;  // the first sequence entirely, and tokens before j
        const bool same = std::equal(out.begin() + static_cast<std::ptrdiff_t>(sz(t, hidden)),
                                     out.begin() + static_cast<std::ptrdiff_t>(sz(t + 1, hidden)),
                                     out2.begin() + static_cast<std::ptrdiff_t>(sz(t, hidden)));
        if (earlier) BOOST_TEST_REQUIRE(same, "token " << t << " changed");
        if (t == tj) BOOST_TEST(!same);
      }
    }
  }
}

// Running the sequences together equals running each alone.
BOOST_AUTO_TEST_CASE(sequences_are_independent) {
  rng_t rng(305);
  const int seqs = 3, seq_len = 70, heads = 2, d = 16, hidden = heads * d, ld = 3 * hidden,
            tokens = seqs * seq_len;
  const auto sh = make_shape(seqs, seq_len, heads, d);
  const vecf qkv = random_vec(rng, sz(tokens, ld));
  const vecf dout = random_vec(rng, sz(tokens, hidden));
  vecf out(sz(tokens, hidden)), lse(sz(seqs * heads, seq_len)), dqkv(qkv.size());
  kc::attention_forward(sh, qkv.data(), qkv.data() + hidden, qkv.data() + 2 * hidden, ld, out.data(), hidden,
                        lse.data());
  kc::attention_backward(sh, qkv.data(), qkv.data() + hidden, qkv.data() + 2 * hidden, ld, out.data(), hidden,
                         dout.data(), hidden, lse.data(), dqkv.data(), dqkv.data() + hidden,
                         dqkv.data() + 2 * hidden, ld);
  const auto one = make_shape(1, seq_len, heads, d);
  for (int s = 0; s < seqs; ++s) {
    const float* q = qkv.data() + sz(s * seq_len, ld);
    vecf o(sz(seq_len, hidden)), l(sz(heads, seq_len)), g(sz(seq_len, ld));
    kc::attention_forward(one, q, q + hidden, q + 2 * hidden, ld, o.data(), hidden, l.data());
    kc::attention_backward(one, q, q + hidden, q + 2 * hidden, ld, o.data(), hidden,
                           dout.data() + sz(s * seq_len, hidden), hidden, l.data(), g.data(),
                           g.data() + hidden, g.data() + 2 * hidden, ld);
    BOOST_TEST(
        std::equal(o.begin(), o.end(), out.begin() + static_cast<std::ptrdiff_t>(sz(s * seq_len, hidden))));
    BOOST_TEST(
        std::equal(l.begin(), l.end(), lse.begin() + static_cast<std::ptrdiff_t>(sz(s * heads, seq_len))));
    BOOST_TEST(
        std::equal(g.begin(), g.end(), dqkv.begin() + static_cast<std::ptrdiff_t>(sz(s * seq_len, ld))));
  }
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------------

namespace {

// Double scores and selection: the k best keys, best first, ties to the lower index.
struct router_result {
  vecd scores;
  std::vector<int> idx;
  vecd weight;
};

vecd router_scores(kc::gating g, const vecd& logits, int rows, int experts) {
  vecd s(logits.size());
  for (int r = 0; r < rows; ++r) {
    const double* l = logits.data() + sz(r, experts);
    double* o = s.data() + sz(r, experts);
    if (g == kc::gating::sigmoid) {
      for (int e = 0; e < experts; ++e) o[e] = sigmoid_d(l[e]);
      continue;
    }
    const double mx = *std::max_element(l, l + experts);
    double sum = 0;
    for (int e = 0; e < experts; ++e) sum += std::exp(l[e] - mx);
    for (int e = 0; e < experts; ++e) o[e] = std::exp(l[e] - mx) / sum;
  }
  return s;
}

// The weights for a fixed selection idx: p (softmax) or s / sum of the chosen s (sigmoid).
vecd router_weights(kc::gating g, const vecd& logits, const std::vector<int>& idx, int rows, int experts,
                    int k) {
  const vecd s = router_scores(g, logits, rows, experts);
  vecd w(sz(rows, k));
  for (int r = 0; r < rows; ++r) {
    double sum = 0;
    for (int j = 0; j < k; ++j) sum += s[sz(r, experts) + sz(idx[sz(r, k) + sz(j)])];
    for (int j = 0; j < k; ++j) {
      const double sc = s[sz(r, experts) + sz(idx[sz(r, k) + sz(j)])];
      w[sz(r, k) + sz(j)] = g == kc::gating::softmax ? sc : sc / sum;
    }
  }
  return w;
}

router_result router_ref(kc::gating g, const vecd& logits, const float* bias, int rows, int experts, int k) {
  router_result res;
  res.scores = router_scores(g, logits, rows, experts);
  res.idx.resize(sz(rows, k));
  std::vector<int> order(sz(experts));
  for (int r = 0; r < rows; ++r) {
    auto key = [&](int e) {
      const double s = res.scores[sz(r, experts) + sz(e)];
      return g == kc::gating::sigmoid && bias ? s + bias[e] : s;
    };
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return key(a) > key(b); });
    std::copy_n(order.begin(), k, res.idx.begin() + static_cast<std::ptrdiff_t>(sz(r, k)));
  }
  res.weight = router_weights(g, logits, res.idx, rows, experts, k);
  return res;
}

struct router_out {
  std::vector<int> idx;
  vecf weight, scores;
};

router_out run_router(kc::gating g, const vecf& logits, const float* bias, int rows, int experts, int k) {
  router_out o{std::vector<int>(sz(rows, k), -1), vecf(sz(rows, k), nan_f), vecf(logits.size(), nan_f)};
  kc::router_forward(g, logits.data(), bias, rows, experts, k, o.idx.data(), o.weight.data(),
                     o.scores.data());
  return o;
}

const char* name(kc::gating g) { return g == kc::gating::softmax ? "softmax" : "sigmoid"; }

}  // namespace

BOOST_AUTO_TEST_SUITE(cpu_router)

const std::vector<std::tuple<int, int, int>> router_shapes = {{1, 1, 1},   {1, 4, 4},   {9, 8, 2},
                                                              {40, 16, 1}, {25, 64, 6}, {7, 5, 5}};

BOOST_AUTO_TEST_CASE(forward_matches_reference) {
  rng_t rng(401);
  for (auto g : {kc::gating::softmax, kc::gating::sigmoid})
    for (const auto& shape : router_shapes)
      for (bool with_bias : {false, true}) {
        const int rows = std::get<0>(shape), experts = std::get<1>(shape), k = std::get<2>(shape);
        BOOST_TEST_CONTEXT(name(g) << " rows=" << rows << " experts=" << experts << " k=" << k
                                   << " bias=" << with_bias) {
          const vecf logits = random_vec(rng, sz(rows, experts), -3.f, 3.f);
          const vecf bias = random_vec(rng, sz(experts), -0.3f, 0.3f);
          const float* b = with_bias ? bias.data() : nullptr;
          const router_out got = run_router(g, logits, b, rows, experts, k);
          const router_result want = router_ref(g, to_double(logits), b, rows, experts, k);
          BOOST_TEST(got.idx == want.idx, boost::test_tools::per_element());
          CHECK_CLOSE(got.scores, want.scores, forward_tol);
          CHECK_CLOSE(got.weight, want.weight, forward_tol);
        }
      }
}

BOOST_AUTO_TEST_CASE(ties_go_to_the_lower_index) {
  // Equal logits give bitwise equal scores under both gatings.
  const vecf logits = {0.5f, 2.f, 2.f, 1.f, 2.f, 0.5f,  //
                       1.f,  1.f, 1.f, 1.f, 1.f, 1.f};
  for (auto g : {kc::gating::softmax, kc::gating::sigmoid}) {
    BOOST_TEST_CONTEXT(name(g)) {
      const router_out o = run_router(g, logits, nullptr, 2, 6, 4);
      BOOST_TEST(o.idx == (std::vector<int>{1, 2, 4, 3, 0, 1, 2, 3}), boost::test_tools::per_element());
    }
  }
  // With sigmoid, a bias that makes two keys equal: s + bias ties go to the lower index as well.
  const vecf flat(6, 0.f);  // s = 0.5 everywhere
  const vecf bias = {0.f, 0.25f, 0.f, 0.25f, 0.f, 0.25f};
  const router_out o = run_router(kc::gating::sigmoid, flat, bias.data(), 1, 6, 4);
  BOOST_TEST(o.idx == (std::vector<int>{1, 3, 5, 0}), boost::test_tools::per_element());
}

// The bias moves the selection but the weights stay s / sum of the chosen s.
BOOST_AUTO_TEST_CASE(sigmoid_bias_selects_but_does_not_weight) {
  rng_t rng(403);
  const int rows = 12, experts = 8, k = 3;
  const vecf logits = random_vec(rng, sz(rows, experts), -2.f, 2.f);
  vecf bias(sz(experts), 0.f);
  bias[6] = 10.f;   // expert 6 now wins every row
  bias[2] = -10.f;  // and expert 2 is never chosen
  const router_out with = run_router(kc::gating::sigmoid, logits, bias.data(), rows, experts, k);
  const router_out without = run_router(kc::gating::sigmoid, logits, nullptr, rows, experts, k);
  BOOST_TEST(with.scores == without.scores, boost::test_tools::per_element());
  bool selection_moved = false;
  for (int r = 0; r < rows; ++r) {
    const int* idx = with.idx.data() + sz(r, k);
    BOOST_TEST(idx[0] == 6);
    BOOST_TEST(std::find(idx, idx + k, 2) == idx + k);
    selection_moved |= !std::equal(idx, idx + k, without.idx.data() + sz(r, k));
  }
  BOOST_TEST(selection_moved);
  const vecd want = router_weights(kc::gating::sigmoid, to_double(logits), with.idx, rows, experts, k);
  CHECK_CLOSE(with.weight, want, forward_tol);
  for (int r = 0; r < rows; ++r) {
    double sum = 0;
    for (int j = 0; j < k; ++j) sum += with.weight[sz(r, k) + sz(j)];
    BOOST_TEST(sum == 1.0, boost::test_tools::tolerance(1e-6));
  }
}

BOOST_AUTO_TEST_CASE(backward_matches_finite_differences) {
  rng_t rng(404);
  for (auto g : {kc::gating::softmax, kc::gating::sigmoid})
    for (const auto& shape : router_shapes) {
      const int rows = std::get<0>(shape), experts = std::get<1>(shape), k = std::get<2>(shape);
      BOOST_TEST_CONTEXT(name(g) << " rows=" << rows << " experts=" << experts << " k=" << k) {
        const vecf logits = random_vec(rng, sz(rows, experts), -3.f, 3.f);
        const vecf bias = random_vec(rng, sz(experts), -0.3f, 0.3f);
        const vecf dw = random_vec(rng, sz(rows, k));
        const router_out o = run_router(g, logits, bias.data(), rows, experts, k);
        vecf dlogits(logits.size(), nan_f);
        kc::router_backward(g, o.scores.data(), o.idx.data(), o.weight.data(), dw.data(), rows, experts, k,
                            dlogits.data());
        // The selection is held fixed at the forward's choice.
        const vecd want = numeric_grad(
            [&](const vecd& x) { return dot(dw, router_weights(g, x, o.idx, rows, experts, k)); },
            to_double(logits));
        CHECK_CLOSE(dlogits, want, backward_tol);
      }
    }
}

BOOST_AUTO_TEST_CASE(bias_update_moves_towards_the_mean_load) {
  vecf bias = {0.f, 0.5f, -0.5f, 1.f};
  const vecf load = {1.f, 2.f, 3.f, 2.f};  // mean 2
  kc::router_update_bias(bias.data(), load.data(), 4, 0.125f);
  BOOST_TEST(bias == (vecf{0.125f, 0.5f, -0.625f, 1.f}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------------

namespace {

struct swiglu_ref_out {
  vecd h1, h3, act, y;
};

swiglu_ref_out swiglu_ref(const vecd& x, const vecd& w1, const vecd& w3, const vecd& w2, int rows, int hidden,
                          int ffn) {
  swiglu_ref_out o;
  o.h1 = matmul(false, false, rows, ffn, hidden, x.data(), hidden, w1.data(), ffn);
  o.h3 = matmul(false, false, rows, ffn, hidden, x.data(), hidden, w3.data(), ffn);
  o.act.resize(o.h1.size());
  for (std::size_t i = 0; i < o.h1.size(); ++i) o.act[i] = silu_d(o.h1[i]) * o.h3[i];
  o.y = matmul(false, false, rows, hidden, ffn, o.act.data(), ffn, w2.data(), hidden);
  return o;
}

// act W2 from given h1 and h3, for the derivative with respect to them.
vecd swiglu_tail_ref(const vecd& h1, const vecd& h3, const vecd& w2, int rows, int hidden, int ffn) {
  vecd act(h1.size());
  for (std::size_t i = 0; i < h1.size(); ++i) act[i] = silu_d(h1[i]) * h3[i];
  return matmul(false, false, rows, hidden, ffn, act.data(), ffn, w2.data(), hidden);
}

struct swiglu_case {
  int rows, hidden, ffn;
  vecf x, w1, w3, w2;
  kc::swiglu_weights weights() const { return {w1.data(), w3.data(), w2.data()}; }
};

swiglu_case make_swiglu(rng_t& rng, int rows, int hidden, int ffn, float x_range = 1.f) {
  const auto w_range = static_cast<float>(1.5 / std::sqrt(hidden));
  return {rows,
          hidden,
          ffn,
          random_vec(rng, sz(rows, hidden), -x_range, x_range),
          random_vec(rng, sz(hidden, ffn), -w_range, w_range),
          random_vec(rng, sz(hidden, ffn), -w_range, w_range),
          random_vec(rng, sz(ffn, hidden), -w_range, w_range)};
}

}  // namespace

BOOST_AUTO_TEST_SUITE(cpu_swiglu)

const std::vector<std::tuple<int, int, int>> swiglu_shapes = {
    {1, 1, 1}, {1, 8, 12}, {7, 19, 24}, {33, 16, 40}};

BOOST_AUTO_TEST_CASE(forward_matches_reference) {
  rng_t rng(501);
  for (const auto& shape : swiglu_shapes)
    for (float x_range : {1.f, 40.f}) {  // the large range drives silu deep into both tails
      const int rows = std::get<0>(shape), hidden = std::get<1>(shape), ffn = std::get<2>(shape);
      BOOST_TEST_CONTEXT("rows=" << rows << " hidden=" << hidden << " ffn=" << ffn
                                 << " x_range=" << x_range) {
        const swiglu_case c = make_swiglu(rng, rows, hidden, ffn, x_range);
        const swiglu_ref_out want =
            swiglu_ref(to_double(c.x), to_double(c.w1), to_double(c.w3), to_double(c.w2), rows, hidden, ffn);
        vecf h1(sz(rows, ffn), nan_f), h3(h1), act(h1), y(sz(rows, hidden), nan_f);
        kc::swiglu_forward(c.x.data(), rows, hidden, ffn, c.weights(), h1.data(), h3.data(), act.data(),
                           y.data(), false);
        CHECK_CLOSE(h1, want.h1, forward_tol);
        CHECK_CLOSE(h3, want.h3, forward_tol);
        CHECK_CLOSE(act, want.act, forward_tol);
        CHECK_CLOSE(y, want.y, forward_tol);

        const vecf y0 = random_vec(rng, y.size());
        y = y0;
        kc::swiglu_forward(c.x.data(), rows, hidden, ffn, c.weights(), h1.data(), h3.data(), act.data(),
                           y.data(), true);
        CHECK_CLOSE(y, plus(y0, want.y), forward_tol);
      }
    }
}

BOOST_AUTO_TEST_CASE(backward_matches_finite_differences) {
  rng_t rng(502);
  for (const auto& shape : swiglu_shapes) {
    const int rows = std::get<0>(shape), hidden = std::get<1>(shape), ffn = std::get<2>(shape);
    BOOST_TEST_CONTEXT("rows=" << rows << " hidden=" << hidden << " ffn=" << ffn) {
      const swiglu_case c = make_swiglu(rng, rows, hidden, ffn, 2.f);
      const vecf dy = random_vec(rng, sz(rows, hidden));
      vecf h1(sz(rows, ffn)), h3(h1), act(h1), y(sz(rows, hidden));
      kc::swiglu_forward(c.x.data(), rows, hidden, ffn, c.weights(), h1.data(), h3.data(), act.data(),
                         y.data(), false);

      const vecd xd = to_double(c.x), w1 = to_double(c.w1), w3 = to_double(c.w3), w2 = to_double(c.w2);
      const swiglu_ref_out fwd = swiglu_ref(xd, w1, w3, w2, rows, hidden, ffn);
      auto loss = [&](const vecd& x, const vecd& a, const vecd& b, const vecd& cc) {
        return dot(dy, swiglu_ref(x, a, b, cc, rows, hidden, ffn).y);
      };
      const vecd dx_ref = numeric_grad([&](const vecd& v) { return loss(v, w1, w3, w2); }, xd);
      const vecd dw1_ref = numeric_grad([&](const vecd& v) { return loss(xd, v, w3, w2); }, w1);
      const vecd dw3_ref = numeric_grad([&](const vecd& v) { return loss(xd, w1, v, w2); }, w3);
      const vecd dw2_ref = numeric_grad([&](const vecd& v) { return loss(xd, w1, w3, v); }, w2);
      const vecd dh1_ref = numeric_grad(
          [&](const vecd& v) { return dot(dy, swiglu_tail_ref(v, fwd.h3, w2, rows, hidden, ffn)); }, fwd.h1);
      const vecd dh3_ref = numeric_grad(
          [&](const vecd& v) { return dot(dy, swiglu_tail_ref(fwd.h1, v, w2, rows, hidden, ffn)); }, fwd.h3);

      vecf dh1(h1.size(), nan_f), dh3(h1.size(), nan_f), dx(c.x.size(), nan_f);
      kc::swiglu_backward_input(dy.data(), rows, hidden, ffn, c.weights(), h1.data(), h3.data(), dh1.data(),
                                dh3.data(), dx.data(), false);
      CHECK_CLOSE(dx, dx_ref, backward_tol);
      CHECK_CLOSE(dh1, dh1_ref, backward_tol);
      CHECK_CLOSE(dh3, dh3_ref, backward_tol);

      const vecf dx0 = random_vec(rng, dx.size());
      dx = dx0;
      kc::swiglu_backward_input(dy.data(), rows, hidden, ffn, c.weights(), h1.data(), h3.data(), dh1.data(),
                                dh3.data(), dx.data(), true);
      CHECK_CLOSE(dx, plus(dx0, dx_ref), backward_tol);

      // The weight part accumulates: start from random contents.
      const vecf dw1_0 = random_vec(rng, c.w1.size()), dw3_0 = random_vec(rng, c.w3.size()),
                 dw2_0 = random_vec(rng, c.w2.size());
      vecf dw1 = dw1_0, dw3 = dw3_0, dw2 = dw2_0;
      kc::swiglu_backward_weight(c.x.data(), act.data(), dy.data(), dh1.data(), dh3.data(), rows, hidden, ffn,
                                 dw1.data(), dw3.data(), dw2.data());
      CHECK_CLOSE(dw1, plus(dw1_0, dw1_ref), backward_tol);
      CHECK_CLOSE(dw3, plus(dw3_0, dw3_ref), backward_tol);
      CHECK_CLOSE(dw2, plus(dw2_0, dw2_ref), backward_tol);
      vecf z1(c.w1.size(), 0.f), z3(c.w3.size(), 0.f), z2(c.w2.size(), 0.f);
      kc::swiglu_backward_weight(c.x.data(), act.data(), dy.data(), dh1.data(), dh3.data(), rows, hidden, ffn,
                                 z1.data(), z3.data(), z2.data());
      CHECK_CLOSE(z1, dw1_ref, backward_tol);
      CHECK_CLOSE(z3, dw3_ref, backward_tol);
      CHECK_CLOSE(z2, dw2_ref, backward_tol);
    }
  }
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------------

namespace {

// topk_idx rows of k distinct experts, as a router produces them.
std::vector<int> random_topk(rng_t& rng, int rows, int k, int experts) {
  std::vector<int> idx(sz(rows, k)), all(sz(experts));
  std::iota(all.begin(), all.end(), 0);
  for (int r = 0; r < rows; ++r) {
    std::shuffle(all.begin(), all.end(), rng);
    std::copy_n(all.begin(), k, idx.begin() + static_cast<std::ptrdiff_t>(sz(r, k)));
  }
  return idx;
}

// y[t] = sum over copies of token t of w[t, slot] * expert_out[copy], in double.
vecd unpermute_ref(const vecd& expert_out, int cols, const kc::route_plan& plan, const vecd& w, int k,
                   int rows) {
  vecd y(sz(rows, cols), 0.0);
  for (std::size_t i = 0; i < plan.token.size(); ++i) {
    const int t = plan.token[i];
    const double wt = w[sz(t, k) + sz(plan.slot[i])];
    for (int c = 0; c < cols; ++c) y[sz(t, cols) + sz(c)] += wt * expert_out[i * sz(cols) + sz(c)];
  }
  return y;
}

vecd permute_ref(const vecd& x, int cols, const kc::route_plan& plan) {
  vecd out(plan.token.size() * sz(cols));
  for (std::size_t i = 0; i < plan.token.size(); ++i)
    for (int c = 0; c < cols; ++c) out[i * sz(cols) + sz(c)] = x[sz(plan.token[i], cols) + sz(c)];
  return out;
}

// The copies of experts [first, last) only: what one rank of an expert-parallel group holds.
kc::route_plan sub_plan(const kc::route_plan& plan, int first, int last) {
  kc::route_plan sub;
  sub.experts = plan.experts;
  const auto begin = static_cast<std::size_t>(plan.expert_offsets[sz(first)]);
  const auto end = static_cast<std::size_t>(plan.expert_offsets[sz(last)]);
  sub.token.assign(plan.token.begin() + static_cast<std::ptrdiff_t>(begin),
                   plan.token.begin() + static_cast<std::ptrdiff_t>(end));
  sub.slot.assign(plan.slot.begin() + static_cast<std::ptrdiff_t>(begin),
                  plan.slot.begin() + static_cast<std::ptrdiff_t>(end));
  for (int e = 0; e <= plan.experts; ++e) {
    const int o = std::clamp(plan.expert_offsets[sz(e)], static_cast<int>(begin), static_cast<int>(end));
    sub.expert_offsets.push_back(o - static_cast<int>(begin));
  }
  return sub;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(cpu_permute)

const std::vector<std::tuple<int, int, int>> permute_shapes = {{1, 1, 1}, {1, 3, 3},  {37, 4, 8},
                                                               {5, 6, 6}, {3, 2, 16}, {64, 2, 5}};

BOOST_AUTO_TEST_CASE(route_plan_order) {
  rng_t rng(601);
  for (const auto& shape : permute_shapes) {
    const int rows = std::get<0>(shape), k = std::get<1>(shape), experts = std::get<2>(shape);
    BOOST_TEST_CONTEXT("rows=" << rows << " k=" << k << " experts=" << experts) {
      const std::vector<int> idx = random_topk(rng, rows, k, experts);
      const kc::route_plan plan = kc::make_route_plan(idx.data(), rows, k, experts);
      std::vector<std::tuple<int, int, int>> want;  // (expert, token, slot), sorted
      for (int t = 0; t < rows; ++t)
        for (int s = 0; s < k; ++s) want.emplace_back(idx[sz(t, k) + sz(s)], t, s);
      std::sort(want.begin(), want.end());
      BOOST_TEST(plan.experts == experts);
      BOOST_TEST_REQUIRE(plan.token.size() == want.size());
      BOOST_TEST_REQUIRE(plan.slot.size() == want.size());
      BOOST_TEST_REQUIRE(plan.expert_offsets.size() == sz(experts + 1));
      BOOST_TEST(plan.expert_offsets.front() == 0);
      BOOST_TEST(plan.expert_offsets.back() == rows * k);
      for (int e = 0; e < experts; ++e)
        for (int i = plan.expert_offsets[sz(e)]; i < plan.expert_offsets[sz(e + 1)]; ++i) {
          BOOST_TEST_REQUIRE(std::get<0>(want[sz(i)]) == e);
          BOOST_TEST_REQUIRE(std::get<1>(want[sz(i)]) == plan.token[sz(i)]);
          BOOST_TEST_REQUIRE(std::get<2>(want[sz(i)]) == plan.slot[sz(i)]);
        }
    }
  }
  // The same expert twice in one token's choices still sorts by slot.
  const std::vector<int> idx = {2, 0, 2, 1, 2, 2};
  const kc::route_plan plan = kc::make_route_plan(idx.data(), 2, 3, 3);
  BOOST_TEST(plan.expert_offsets == (std::vector<int>{0, 1, 2, 6}), boost::test_tools::per_element());
  BOOST_TEST(plan.token == (std::vector<int>{0, 1, 0, 0, 1, 1}), boost::test_tools::per_element());
  BOOST_TEST(plan.slot == (std::vector<int>{1, 0, 0, 2, 1, 2}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(permute_and_round_trip) {
  rng_t rng(602);
  for (const auto& shape : permute_shapes) {
    const int rows = std::get<0>(shape), k = std::get<1>(shape), experts = std::get<2>(shape);
    BOOST_TEST_CONTEXT("rows=" << rows << " k=" << k << " experts=" << experts) {
      const int cols = 13;
      const std::vector<int> idx = random_topk(rng, rows, k, experts);
      const kc::route_plan plan = kc::make_route_plan(idx.data(), rows, k, experts);
      const vecf x = random_vec(rng, sz(rows, cols));
      vecf permuted(plan.token.size() * sz(cols), nan_f);
      kc::permute_rows(x.data(), cols, plan, permuted.data());
      for (std::size_t i = 0; i < plan.token.size(); ++i)
        BOOST_TEST_REQUIRE(std::equal(permuted.begin() + static_cast<std::ptrdiff_t>(i * sz(cols)),
                                      permuted.begin() + static_cast<std::ptrdiff_t>((i + 1) * sz(cols)),
                                      x.begin() + static_cast<std::ptrdiff_t>(sz(plan.token[i], cols))));
      // Back with weight 1 on slot 0 only: x exactly; with weights w: x * sum of the token's w.
      vecf one_hot(sz(rows, k), 0.f);
      for (int t = 0; t < rows; ++t) one_hot[sz(t, k)] = 1.f;
      vecf y(x.size(), nan_f);
      kc::unpermute_weighted_sum(permuted.data(), cols, plan, one_hot.data(), k, rows, y.data(), false);
      BOOST_TEST(y == x, boost::test_tools::per_element());
      const vecf w = random_vec(rng, sz(rows, k), 0.f, 1.f);
      kc::unpermute_weighted_sum(permuted.data(), cols, plan, w.data(), k, rows, y.data(), false);
      vecd want(x.size());
      for (int t = 0; t < rows; ++t) {
        double ws = 0;
        for (int s = 0; s < k; ++s) ws += w[sz(t, k) + sz(s)];
        for (int c = 0; c < cols; ++c) want[sz(t, cols) + sz(c)] = ws * x[sz(t, cols) + sz(c)];
      }
      CHECK_CLOSE(y, want, forward_tol);
    }
  }
}

BOOST_AUTO_TEST_CASE(unpermute_matches_reference_and_ignores_copy_order) {
  rng_t rng(603);
  for (const auto& shape : permute_shapes) {
    const int rows = std::get<0>(shape), k = std::get<1>(shape), experts = std::get<2>(shape);
    BOOST_TEST_CONTEXT("rows=" << rows << " k=" << k << " experts=" << experts) {
      const int cols = 9;
      const std::vector<int> idx = random_topk(rng, rows, k, experts);
      const kc::route_plan plan = kc::make_route_plan(idx.data(), rows, k, experts);
      const int copies = rows * k;
      const vecf expert_out = random_vec(rng, sz(copies, cols));
      const vecf w = random_vec(rng, sz(rows, k));
      const vecd want = unpermute_ref(to_double(expert_out), cols, plan, to_double(w), k, rows);
      vecf y(sz(rows, cols), nan_f);
      kc::unpermute_weighted_sum(expert_out.data(), cols, plan, w.data(), k, rows, y.data(), false);
      CHECK_CLOSE(y, want, forward_tol);

      const vecf y0 = random_vec(rng, y.size());
      vecf y_acc = y0;
      kc::unpermute_weighted_sum(expert_out.data(), cols, plan, w.data(), k, rows, y_acc.data(), true);
      CHECK_CLOSE(y_acc, plus(y0, want), forward_tol);

      // The same copies listed in a shuffled order give the same bits.
      std::vector<int> perm(sz(copies));
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), rng);
      kc::route_plan shuffled = plan;
      vecf shuffled_out(expert_out.size());
      for (int i = 0; i < copies; ++i) {
        const auto from = sz(perm[sz(i)]);
        shuffled.token[sz(i)] = plan.token[from];
        shuffled.slot[sz(i)] = plan.slot[from];
        std::copy_n(expert_out.begin() + static_cast<std::ptrdiff_t>(from * sz(cols)), cols,
                    shuffled_out.begin() + static_cast<std::ptrdiff_t>(sz(i, cols)));
      }
      vecf y2(y.size(), nan_f);
      kc::unpermute_weighted_sum(shuffled_out.data(), cols, shuffled, w.data(), k, rows, y2.data(), false);
      BOOST_TEST(y2 == y, boost::test_tools::per_element());
      vecf dx1(y.size(), nan_f), dx2(y.size(), nan_f);
      kc::permute_rows_backward(expert_out.data(), cols, plan, k, rows, dx1.data(), false);
      kc::permute_rows_backward(shuffled_out.data(), cols, shuffled, k, rows, dx2.data(), false);
      BOOST_TEST(dx1 == dx2, boost::test_tools::per_element());
    }
  }
}

// A plan holding only some experts' copies (one rank's share) combines just those.
BOOST_AUTO_TEST_CASE(partial_plan_combines_its_own_copies) {
  rng_t rng(604);
  const int rows = 20, k = 3, experts = 8, cols = 5;
  const std::vector<int> idx = random_topk(rng, rows, k, experts);
  const kc::route_plan plan = kc::make_route_plan(idx.data(), rows, k, experts);
  const kc::route_plan part = sub_plan(plan, 2, 5);
  const vecf expert_out = random_vec(rng, part.token.size() * sz(cols));
  const vecf w = random_vec(rng, sz(rows, k));
  vecf y(sz(rows, cols), nan_f);
  kc::unpermute_weighted_sum(expert_out.data(), cols, part, w.data(), k, rows, y.data(), false);
  CHECK_CLOSE(y, unpermute_ref(to_double(expert_out), cols, part, to_double(w), k, rows), forward_tol);
}

BOOST_AUTO_TEST_CASE(backward_matches_finite_differences) {
  rng_t rng(605);
  for (const auto& shape : permute_shapes) {
    const int rows = std::get<0>(shape), k = std::get<1>(shape), experts = std::get<2>(shape);
    BOOST_TEST_CONTEXT("rows=" << rows << " k=" << k << " experts=" << experts) {
      const int cols = 7;
      const std::vector<int> idx = random_topk(rng, rows, k, experts);
      const kc::route_plan plan = kc::make_route_plan(idx.data(), rows, k, experts);
      const int copies = rows * k;
      const vecf expert_out = random_vec(rng, sz(copies, cols));
      const vecf w = random_vec(rng, sz(rows, k));
      const vecf dy = random_vec(rng, sz(rows, cols));
      const vecd eo_d = to_double(expert_out), w_d = to_double(w);

      vecf d_expert_out(expert_out.size(), nan_f), d_w(w.size(), nan_f);
      kc::unpermute_backward(dy.data(), expert_out.data(), cols, plan, w.data(), k, d_expert_out.data(),
                             d_w.data());
      const vecd d_eo_ref = numeric_grad(
          [&](const vecd& v) { return dot(dy, unpermute_ref(v, cols, plan, w_d, k, rows)); }, eo_d);
      const vecd d_w_ref = numeric_grad(
          [&](const vecd& v) { return dot(dy, unpermute_ref(eo_d, cols, plan, v, k, rows)); }, w_d);
      CHECK_CLOSE(d_expert_out, d_eo_ref, backward_tol);
      CHECK_CLOSE(d_w, d_w_ref, backward_tol);

      const vecf d_out = random_vec(rng, sz(copies, cols));
      const vecf x = random_vec(rng, sz(rows, cols));
      const vecd dx_ref =
          numeric_grad([&](const vecd& v) { return dot(d_out, permute_ref(v, cols, plan)); }, to_double(x));
      vecf dx(x.size(), nan_f);
      kc::permute_rows_backward(d_out.data(), cols, plan, k, rows, dx.data(), false);
      CHECK_CLOSE(dx, dx_ref, backward_tol);
      const vecf dx0 = random_vec(rng, x.size());
      dx = dx0;
      kc::permute_rows_backward(d_out.data(), cols, plan, k, rows, dx.data(), true);
      CHECK_CLOSE(dx, plus(dx0, dx_ref), backward_tol);
    }
  }
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------------

namespace {

// Sum over rows of lse(logits) - logits[target], in double.
double cross_entropy_ref(const vecd& logits, const std::vector<int>& targets, int rows, int vocab) {
  double total = 0;
  for (int r = 0; r < rows; ++r) {
    const double* l = logits.data() + sz(r, vocab);
    const double mx = *std::max_element(l, l + vocab);
    double sum = 0;
    for (int j = 0; j < vocab; ++j) sum += std::exp(l[j] - mx);
    total += mx + std::log(sum) - l[targets[sz(r)]];
  }
  return total;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(cpu_loss)

BOOST_AUTO_TEST_CASE(embedding_forward_and_backward) {
  rng_t rng(701);
  const int vocab = 11, dim = 6, rows = 40;  // more rows than ids: ids repeat
  const vecf table = random_vec(rng, sz(vocab, dim));
  std::vector<int> ids = random_ints(rng, sz(rows), 0, vocab - 1);
  ids[3] = ids[5] = ids[17] = 4;
  vecf out(sz(rows, dim), nan_f);
  kc::embedding_forward(table.data(), ids.data(), rows, dim, out.data());
  for (int t = 0; t < rows; ++t)
    BOOST_TEST_REQUIRE(std::equal(out.begin() + static_cast<std::ptrdiff_t>(sz(t, dim)),
                                  out.begin() + static_cast<std::ptrdiff_t>(sz(t + 1, dim)),
                                  table.begin() + static_cast<std::ptrdiff_t>(sz(ids[sz(t)], dim))));

  const vecf dout = random_vec(rng, out.size());
  auto embed = [&](const vecd& tbl) {
    vecd o(out.size());
    for (int t = 0; t < rows; ++t)
      for (int j = 0; j < dim; ++j) o[sz(t, dim) + sz(j)] = tbl[sz(ids[sz(t)], dim) + sz(j)];
    return o;
  };
  const vecd dtable_ref = numeric_grad([&](const vecd& v) { return dot(dout, embed(v)); }, to_double(table));
  const vecf dtable0 = random_vec(rng, table.size());
  vecf dtable = dtable0;
  kc::embedding_backward(dout.data(), ids.data(), rows, dim, dtable.data());
  CHECK_CLOSE(dtable, plus(dtable0, dtable_ref), backward_tol);
  // A row no token uses stays as it was: map id 0 away and look at row 0.
  std::vector<int> no_zero = ids;
  for (auto& id : no_zero) id = id == 0 ? 1 : id;
  dtable = dtable0;
  kc::embedding_backward(dout.data(), no_zero.data(), rows, dim, dtable.data());
  BOOST_TEST(std::equal(dtable.begin(), dtable.begin() + dim, dtable0.begin()));
}

BOOST_AUTO_TEST_CASE(cross_entropy_value_and_gradient) {
  rng_t rng(702);
  const std::vector<std::pair<int, int>> shapes = {{1, 1}, {1, 2}, {5, 17}, {33, 300}, {4, 1000}};
  for (const auto& shape : shapes)
    for (float offset : {0.f, 500.f}) {  // a large common offset overflows exp without the max shift
      const int rows = std::get<0>(shape), vocab = std::get<1>(shape);
      BOOST_TEST_CONTEXT("rows=" << rows << " vocab=" << vocab << " offset=" << offset) {
        vecf logits = random_vec(rng, sz(rows, vocab), -4.f, 4.f);
        for (auto& l : logits) l += offset;
        const std::vector<int> targets = random_ints(rng, sz(rows), 0, vocab - 1);
        const float scale = 0.25f;
        vecf dlogits(logits.size(), nan_f);
        const double loss =
            kc::cross_entropy(logits.data(), targets.data(), rows, vocab, scale, dlogits.data());
        const vecd ld = to_double(logits);
        const double want = cross_entropy_ref(ld, targets, rows, vocab);
        BOOST_TEST(std::isfinite(loss));
        BOOST_TEST(std::abs(loss - want) <= forward_tol * std::max(1.0, std::abs(want)),
                   "loss " << loss << " want " << want);
        vecd grad =
            numeric_grad([&](const vecd& v) { return cross_entropy_ref(v, targets, rows, vocab); }, ld);
        for (auto& g : grad) g *= scale;
        CHECK_CLOSE(dlogits, grad, backward_tol);
      }
    }
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_SUITE(cpu_adamw)

// Step 1 by hand: m = (1 - b1) g and v = (1 - b2) g^2, so after bias correction the update is
// g / (|g| + eps), about sign(g); step 2 follows the formulas term by term.
BOOST_AUTO_TEST_CASE(two_steps_by_hand) {
  kc::adamw_config cfg;
  cfg.lr = 0.01f;
  cfg.beta1 = 0.9f;
  cfg.beta2 = 0.99f;
  cfg.eps = 1e-8f;
  cfg.weight_decay = 0.1f;
  vecf p = {0.5f, -1.f, 2.f, 0.f};
  const vecf g1 = {0.1f, -0.2f, 0.f, 1.f};
  const vecf g2 = {0.3f, 0.2f, -0.5f, 1.f};
  vecf m(4, 0.f), v(4, 0.f);

  kc::adamw_step(p.data(), g1.data(), m.data(), v.data(), 4, cfg, 1);
  // p * (1 - 0.01 * 0.1) - 0.01 * sign(g)
  const vecd p1 = {0.5 * 0.999 - 0.01, -1.0 * 0.999 + 0.01, 2.0 * 0.999, 0.0 - 0.01};
  CHECK_CLOSE(p, p1, 1e-6);
  CHECK_CLOSE(m, (vecd{0.01, -0.02, 0.0, 0.1}), 1e-6);
  CHECK_CLOSE(v, (vecd{1e-4, 4e-4, 0.0, 1e-2}), 1e-6);

  kc::adamw_step(p.data(), g2.data(), m.data(), v.data(), 4, cfg, 2);
  vecd p2(4), m2(4), v2(4);
  for (std::size_t i = 0; i < 4; ++i) {
    const double b1 = 0.9, b2 = 0.99;
    const double gd1 = g1[i], gd2 = g2[i];
    m2[i] = b1 * (1 - b1) * gd1 + (1 - b1) * gd2;
    v2[i] = b2 * (1 - b2) * gd1 * gd1 + (1 - b2) * gd2 * gd2;
    const double m_hat = m2[i] / (1 - b1 * b1), v_hat = v2[i] / (1 - b2 * b2);
    p2[i] = p1[i] - 0.01 * (m_hat / (std::sqrt(v_hat) + 1e-8) + 0.1 * p1[i]);
  }
  CHECK_CLOSE(m, m2, 1e-6);
  CHECK_CLOSE(v, v2, 1e-6);
  CHECK_CLOSE(p, p2, 1e-6);
  // The last entry saw the same gradient twice, so both corrected moments are 1 and the update is 1 again.
  BOOST_TEST(p[3] == p1[3] * 0.999 - 0.01, boost::test_tools::tolerance(1e-6));
}

BOOST_AUTO_TEST_CASE(many_parameters_match_double_reference) {
  rng_t rng(802);
  const std::size_t n = 1000;
  kc::adamw_config cfg;  // the defaults
  vecf p = random_vec(rng, n);
  vecf m(n, 0.f), v(n, 0.f);
  vecd pd = to_double(p), md(n, 0.0), vd(n, 0.0);
  for (int step = 1; step <= 3; ++step) {
    const vecf g = random_vec(rng, n, -0.01f, 0.01f);
    kc::adamw_step(p.data(), g.data(), m.data(), v.data(), n, cfg, step);
    const double c1 = 1 - std::pow(double{cfg.beta1}, step), c2 = 1 - std::pow(double{cfg.beta2}, step);
    for (std::size_t i = 0; i < n; ++i) {
      md[i] = cfg.beta1 * md[i] + (1 - double{cfg.beta1}) * g[i];
      vd[i] = cfg.beta2 * vd[i] + (1 - double{cfg.beta2}) * g[i] * g[i];
      pd[i] -= cfg.lr * (md[i] / c1 / (std::sqrt(vd[i] / c2) + cfg.eps) + double{cfg.weight_decay} * pd[i]);
    }
  }
  CHECK_CLOSE(m, md, 1e-5);
  CHECK_CLOSE(v, vd, 1e-5);
  CHECK_CLOSE(p, pd, 1e-6);
}

BOOST_AUTO_TEST_SUITE_END()
