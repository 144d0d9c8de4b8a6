// The CUDA kernels (kernels/cuda/) against the CPU kernels (kernels/cpu/): each case draws fresh random
// inputs (seed from std::random_device, printed with any failure), rounds them to bf16, runs the GPU kernel
// on the bf16 values and the fp32 CPU kernel on the same values, and requires a relative L2 error
// ||gpu - cpu|| / ||cpu|| under 1e-2 (bf16 operands; fp32-only paths are held tighter) and no NaN. Outputs
// are poisoned (all bits set: NaN) before each run, so an unwritten element fails the check; outputs that
// accumulate start from random values instead.
//
// Without CUDA in the build, or without a GPU, every suite reports itself skipped.
#include <boost/test/unit_test.hpp>

#include "tests/gpu_test_support.hpp"

#if LOOM_WITH_CUDA
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/adamw.hpp"
#include "kernels/cpu/attention.hpp"
#include "kernels/cpu/gemm.hpp"
#include "kernels/cpu/loss.hpp"
#include "kernels/cpu/permute.hpp"
#include "kernels/cpu/rmsnorm.hpp"
#include "kernels/cpu/router.hpp"
#include "kernels/cpu/swiglu.hpp"
#include "kernels/cuda/adamw.hpp"
#include "kernels/cuda/attention.hpp"
#include "kernels/cuda/cublas_api.hpp"
#include "kernels/cuda/gemm.hpp"
#include "kernels/cuda/grouped_gemm.hpp"
#include "kernels/cuda/loss.hpp"
#include "kernels/cuda/memory.hpp"
#include "kernels/cuda/permute.hpp"
#include "kernels/cuda/rmsnorm.hpp"
#include "kernels/cuda/router.hpp"
#include "kernels/cuda/swiglu.hpp"

namespace {

namespace lc = loom::cuda;
namespace cpu = loom::kernels::cpu;
using bf16 = lc::bf16;

constexpr double bf16_tol = 1e-2;

void require_ok(cudaError_t e, const char* what) {
  BOOST_REQUIRE_MESSAGE(e == cudaSuccess,
                        what << ": " << cudaGetErrorName(e) << " " << cudaGetErrorString(e));
}
void require_ok(const loom::expected<void>& e, const char* what) {
  BOOST_REQUIRE_MESSAGE(e.has_value(), what << ": " << (e ? std::string() : e.error().message));
}

// A plain device array for the tests (cudaMalloc; the pool has its own suite).
template <class T>
class dbuf {
 public:
  explicit dbuf(std::size_t n) : n_(n) {
    require_ok(cudaMalloc(reinterpret_cast<void**>(&p_), std::max<std::size_t>(n, 1) * sizeof(T)),
               "cudaMalloc");
  }
  explicit dbuf(const std::vector<T>& v) : dbuf(v.size()) { put(v); }
  ~dbuf() { cudaFree(p_); }
  dbuf(const dbuf&) = delete;
  dbuf& operator=(const dbuf&) = delete;
  T* get() const { return p_; }
  std::size_t size() const { return n_; }
  void put(const std::vector<T>& v) {
    BOOST_REQUIRE(v.size() <= n_);
    require_ok(cudaMemcpy(p_, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy H2D");
  }
  std::vector<T> take() const {
    require_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize (kernel error)");
    std::vector<T> v(n_);
    require_ok(cudaMemcpy(v.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
    return v;
  }
  void poison() {
    require_ok(cudaMemset(p_, 0xff, std::max<std::size_t>(n_, 1) * sizeof(T)), "cudaMemset (poison)");
  }

 private:
  T* p_ = nullptr;
  std::size_t n_ = 0;
};

struct rnd {
  std::uint64_t seed;
  std::mt19937_64 gen;
  rnd()
      : seed((static_cast<std::uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}()),
        gen(seed) {}
  float normal(float sd = 1.f) { return std::normal_distribution<float>(0.f, sd)(gen); }
  float uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(gen); }
  int integer(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(gen); }
};

float round_bf16(float x) { return __bfloat162float(__float2bfloat16(x)); }

// n values N(mean, sd), already rounded to bf16.
std::vector<float> bf16_values(rnd& r, std::size_t n, float sd = 1.f, float mean = 0.f) {
  std::vector<float> v(n);
  for (auto& x : v) x = round_bf16(mean + r.normal(sd));
  return v;
}
std::vector<bf16> to_bf16(const std::vector<float>& v) {
  std::vector<bf16> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = __float2bfloat16(v[i]);
  return out;
}
std::vector<float> to_float(const std::vector<bf16>& v) {
  std::vector<float> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = __bfloat162float(v[i]);
  return out;
}

// ||gpu - cpu|| / ||cpu||; infinity when the GPU result holds a NaN or infinity.
double rel_err(const std::vector<float>& gpu, const std::vector<float>& ref) {
  BOOST_REQUIRE_EQUAL(gpu.size(), ref.size());
  double num = 0, den = 0;
  for (std::size_t i = 0; i < gpu.size(); ++i) {
    if (!std::isfinite(gpu[i])) return INFINITY;
    const double d = static_cast<double>(gpu[i]) - ref[i];
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

void check_close(const std::string& what, const std::vector<float>& gpu, const std::vector<float>& ref,
                 double tol, std::uint64_t seed) {
  const double e = rel_err(gpu, ref);
  BOOST_TEST_MESSAGE(what << ": rel err " << e);
  BOOST_CHECK_MESSAGE(e < tol,
                      what << ": relative error " << e << " (limit " << tol << ", seed " << seed << ")");
}
void check_close(const std::string& what, const std::vector<bf16>& gpu, const std::vector<float>& ref,
                 double tol, std::uint64_t seed) {
  check_close(what, to_float(gpu), ref, tol, seed);
}

// Rows [r0, r1) of a row-major [*, cols] array.
template <class T>
std::vector<T> rows_of(const std::vector<T>& v, int cols, int r0, int r1) {
  return std::vector<T>(v.begin() + static_cast<std::ptrdiff_t>(r0) * cols,
                        v.begin() + static_cast<std::ptrdiff_t>(r1) * cols);
}

// ------------------------------------------------------------------------------------------------

void rmsnorm_case(int rows, int dim) {
  rnd r;
  const std::string tag = "rmsnorm rows=" + std::to_string(rows) + " dim=" + std::to_string(dim);
  const float eps = 1e-5f;
  auto x = bf16_values(r, static_cast<std::size_t>(rows) * dim, 1.5f);
  auto gamma = bf16_values(r, dim, 0.2f, 1.f);
  auto dy = bf16_values(r, static_cast<std::size_t>(rows) * dim);
  auto dx0 = bf16_values(r, static_cast<std::size_t>(rows) * dim);
  std::vector<float> dg0(dim);
  for (auto& v : dg0) v = r.normal();

  dbuf<bf16> d_x(to_bf16(x)), d_g(to_bf16(gamma)), d_dy(to_bf16(dy)), d_y(x.size()), d_dx(x.size());
  dbuf<float> d_inv(rows), d_dg(dg0);
  d_y.poison();
  d_inv.poison();
  require_ok(lc::rmsnorm_forward(d_x.get(), d_g.get(), d_y.get(), d_inv.get(), rows, dim, eps, nullptr),
             "rmsnorm_forward");
  std::vector<float> y(x.size()), inv(rows);
  cpu::rmsnorm_forward(x.data(), gamma.data(), y.data(), inv.data(), rows, dim, eps);
  check_close(tag + " forward y", d_y.take(), y, bf16_tol, r.seed);
  check_close(tag + " forward inv_rms", d_inv.take(), inv, 1e-5, r.seed);

  for (bool accumulate : {false, true}) {
    if (accumulate)
      d_dx.put(to_bf16(dx0));
    else
      d_dx.poison();
    require_ok(lc::rmsnorm_backward_input(d_dy.get(), d_x.get(), d_g.get(), d_inv.get(), d_dx.get(), rows,
                                          dim, accumulate, nullptr),
               "rmsnorm_backward_input");
    std::vector<float> dx = accumulate ? dx0 : std::vector<float>(x.size());
    cpu::rmsnorm_backward_input(dy.data(), x.data(), gamma.data(), inv.data(), dx.data(), rows, dim,
                                accumulate);
    check_close(tag + (accumulate ? " backward input (accumulate)" : " backward input"), d_dx.take(), dx,
                bf16_tol, r.seed);
  }
  require_ok(lc::rmsnorm_backward_weight(d_dy.get(), d_x.get(), d_inv.get(), d_dg.get(), rows, dim, nullptr),
             "rmsnorm_backward_weight");
  std::vector<float> dg = dg0;
  cpu::rmsnorm_backward_weight(dy.data(), x.data(), inv.data(), dg.data(), rows, dim);
  check_close(tag + " backward weight", d_dg.take(), dg, 1e-4, r.seed);
}

// ------------------------------------------------------------------------------------------------

void attention_case(int seqs, int len, int heads, int hd) {
  rnd r;
  const std::string tag = "attention seqs=" + std::to_string(seqs) + " len=" + std::to_string(len) +
                          " heads=" + std::to_string(heads) + " head_dim=" + std::to_string(hd);
  const int hidden = heads * hd, T = seqs * len, ld = 3 * hidden;
  const float scale = 1.f / std::sqrt(static_cast<float>(hd));
  auto qkv = bf16_values(r, static_cast<std::size_t>(T) * ld);
  auto dout = bf16_values(r, static_cast<std::size_t>(T) * hidden);

  cpu::attention_shape cs{seqs, len, heads, hd, scale};
  std::vector<float> out(static_cast<std::size_t>(T) * hidden),
      lse(static_cast<std::size_t>(seqs) * heads * len);
  cpu::attention_forward(cs, qkv.data(), qkv.data() + hidden, qkv.data() + 2 * hidden, ld, out.data(), hidden,
                         lse.data());
  std::vector<float> dqkv(qkv.size());
  cpu::attention_backward(cs, qkv.data(), qkv.data() + hidden, qkv.data() + 2 * hidden, ld, out.data(),
                          hidden, dout.data(), hidden, lse.data(), dqkv.data(), dqkv.data() + hidden,
                          dqkv.data() + 2 * hidden, ld);

  lc::attention_shape gs{seqs, len, heads, hd, scale};
  // dq and dk are differences of nearly equal terms when a row sees few keys (with seq_len 1 they are exactly
  // zero): measure their error against the size of dv as well, so rounding noise on a zero is not "100%".
  double dv_norm = 0;
  for (int t = 0; t < T; ++t)
    for (int c = 0; c < hidden; ++c) {
      const double x = dqkv[static_cast<std::size_t>(t) * ld + 2 * hidden + c];
      dv_norm += x * x;
    }
  dv_norm = std::sqrt(dv_norm);
  for (auto impl : {lc::attention_impl::automatic, lc::attention_impl::wgmma, lc::attention_impl::wgmma_basic,
                    lc::attention_impl::wgmma_split, lc::attention_impl::mma_sync}) {
    const std::string itag = tag + (impl == lc::attention_impl::automatic     ? " [automatic]"
                                    : impl == lc::attention_impl::wgmma       ? " [wgmma]"
                                    : impl == lc::attention_impl::wgmma_basic ? " [wgmma_basic]"
                                    : impl == lc::attention_impl::wgmma_split ? " [wgmma_split]"
                                                                              : " [mma_sync]");
    dbuf<bf16> d_qkv(to_bf16(qkv)), d_out(out.size()), d_dout(to_bf16(dout)), d_dqkv(qkv.size());
    dbuf<float> d_lse(lse.size());
    d_out.poison();
    d_lse.poison();
    d_dqkv.poison();
    const bf16* q = d_qkv.get();
    require_ok(lc::attention_forward(gs, q, q + hidden, q + 2 * hidden, ld, d_out.get(), hidden, d_lse.get(),
                                     nullptr, impl),
               "attention_forward");
    check_close(itag + " forward out", d_out.take(), out, bf16_tol, r.seed);
    check_close(itag + " forward lse", d_lse.take(), lse, 1e-3, r.seed);

    const std::size_t ws = lc::attention_backward_workspace_bytes(gs, impl);
    dbuf<unsigned char> d_ws(ws);
    d_ws.poison();
    bf16* g = d_dqkv.get();
    require_ok(lc::attention_backward(gs, q, q + hidden, q + 2 * hidden, ld, d_out.get(), hidden,
                                      d_dout.get(), hidden, d_lse.get(), g, g + hidden, g + 2 * hidden, ld,
                                      d_ws.get(), ws, nullptr, impl),
               "attention_backward");
    // The size is per implementation (the split backward needs no dQ accumulator): one byte less fails.
    if (ws > 0) {
      const auto short_ws = lc::attention_backward(gs, q, q + hidden, q + 2 * hidden, ld, d_out.get(), hidden,
                                                   d_dout.get(), hidden, d_lse.get(), g, g + hidden,
                                                   g + 2 * hidden, ld, d_ws.get(), ws - 1, nullptr, impl);
      BOOST_CHECK_MESSAGE(!short_ws, itag << ": a workspace one byte short of "
                                             "attention_backward_workspace_bytes was accepted");
    }
    const auto got = to_float(d_dqkv.take());
    const char* names[3] = {" backward dq", " backward dk", " backward dv"};
    for (int part = 0; part < 3; ++part) {
      std::vector<float> a, b;
      double num = 0, den = 0;
      bool finite = true;
      for (int t = 0; t < T; ++t)
        for (int c = 0; c < hidden; ++c) {
          const std::size_t i = static_cast<std::size_t>(t) * ld + part * hidden + c;
          finite = finite && std::isfinite(got[i]);
          num += (static_cast<double>(got[i]) - dqkv[i]) * (static_cast<double>(got[i]) - dqkv[i]);
          den += static_cast<double>(dqkv[i]) * dqkv[i];
        }
      const double e = finite ? std::sqrt(num) / std::max(std::sqrt(den), 0.01 * dv_norm) : INFINITY;
      BOOST_TEST_MESSAGE(itag << names[part] << ": rel err " << e);
      BOOST_CHECK_MESSAGE(e < bf16_tol, itag << names[part] << ": relative error " << e << " (limit "
                                             << bf16_tol << ", seed " << r.seed << ")");
    }
  }
}

// ------------------------------------------------------------------------------------------------

void router_case(cpu::gating g, int rows, int experts, int k, bool with_bias, bool integer_logits) {
  rnd r;
  const std::string tag = std::string("router ") + (g == cpu::gating::softmax ? "softmax" : "sigmoid") +
                          " rows=" + std::to_string(rows) + " experts=" + std::to_string(experts) +
                          " k=" + std::to_string(k) + (integer_logits ? " (ties)" : "");
  std::vector<float> logits(static_cast<std::size_t>(rows) * experts);
  for (auto& v : logits) v = integer_logits ? static_cast<float>(r.integer(-2, 2)) : r.normal(2.f);
  std::vector<float> bias(experts);
  for (auto& v : bias) v = integer_logits ? 0.f : r.normal(0.05f);
  const float* bias_ptr = with_bias ? bias.data() : nullptr;

  std::vector<int> idx(static_cast<std::size_t>(rows) * k);
  std::vector<float> w(idx.size()), scores(logits.size());
  cpu::router_forward(g, logits.data(), bias_ptr, rows, experts, k, idx.data(), w.data(), scores.data());

  dbuf<float> d_logits(logits), d_bias(bias), d_w(w.size()), d_scores(scores.size());
  dbuf<int> d_idx(idx.size());
  d_w.poison();
  d_scores.poison();
  d_idx.poison();
  const lc::gating gg = g == cpu::gating::softmax ? lc::gating::softmax : lc::gating::sigmoid;
  require_ok(lc::router_forward(gg, d_logits.get(), with_bias ? d_bias.get() : nullptr, rows, experts, k,
                                d_idx.get(), d_w.get(), d_scores.get(), nullptr),
             "router_forward");
  const auto gi = d_idx.take();
  const auto gs = d_scores.take();
  check_close(tag + " scores", gs, scores, 1e-5, r.seed);
  // The selection: identical indices, except that a near-tie (keys within float rounding) may go either way.
  int mismatches = 0, bad = 0;
  for (int row = 0; row < rows; ++row) {
    for (int j = 0; j < k; ++j) {
      const std::size_t i = static_cast<std::size_t>(row) * k + j;
      const int a = gi[i], b = idx[i];
      if (a < 0 || a >= experts) {
        ++bad;
        continue;
      }
      if (a == b) continue;
      ++mismatches;
      auto key = [&](int e) {
        const float s = scores[static_cast<std::size_t>(row) * experts + e];
        return g == cpu::gating::sigmoid && with_bias ? s + bias[e] : s;
      };
      if (integer_logits || std::fabs(key(a) - key(b)) > 1e-6f * std::max(1.f, std::fabs(key(b)))) ++bad;
    }
  }
  BOOST_CHECK_MESSAGE(bad == 0, tag << ": " << bad << " wrong top-k choices (seed " << r.seed << ")");
  if (mismatches > 0) BOOST_TEST_MESSAGE(tag << ": " << mismatches << " near-tie swaps");
  if (mismatches == 0) check_close(tag + " weights", d_w.take(), w, 1e-5, r.seed);

  // Backward from the CPU's forward results, so both sides see the same selection.
  std::vector<float> dw(w.size());
  for (auto& v : dw) v = r.normal();
  std::vector<float> dl(logits.size());
  cpu::router_backward(g, scores.data(), idx.data(), w.data(), dw.data(), rows, experts, k, dl.data());
  dbuf<float> c_scores(scores), c_w(w), d_dw(dw), d_dl(dl.size());
  dbuf<int> c_idx(idx);
  d_dl.poison();
  require_ok(lc::router_backward(gg, c_scores.get(), c_idx.get(), c_w.get(), d_dw.get(), rows, experts, k,
                                 d_dl.get(), nullptr),
             "router_backward");
  check_close(tag + " backward", d_dl.take(), dl, 1e-4, r.seed);
}

void router_bias_case() {
  rnd r;
  const int experts = 77;
  std::vector<float> bias(experts), load(experts);
  for (auto& v : bias) v = r.normal(0.1f);
  for (auto& v : load) v = static_cast<float>(r.integer(0, 100));
  dbuf<float> d_bias(bias), d_load(load);
  require_ok(lc::router_update_bias(d_bias.get(), d_load.get(), experts, 1e-3f, nullptr),
             "router_update_bias");
  cpu::router_update_bias(bias.data(), load.data(), experts, 1e-3f);
  check_close("router_update_bias", d_bias.take(), bias, 1e-6, r.seed);
}

// ------------------------------------------------------------------------------------------------

// Random top-k slot ids without repeats within a token, from a subset of the slots (some stay empty).
std::vector<int> random_topk(rnd& r, int rows, int k, int experts, bool leave_empty) {
  std::vector<int> pool(experts);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), r.gen);
  int used = experts;
  if (leave_empty && experts > k + 1) used = std::max(k, experts - std::max(1, experts / 4));
  std::vector<int> idx(static_cast<std::size_t>(rows) * k);
  std::vector<int> pick(pool.begin(), pool.begin() + used);
  for (int t = 0; t < rows; ++t) {
    std::shuffle(pick.begin(), pick.end(), r.gen);
    for (int j = 0; j < k; ++j) idx[static_cast<std::size_t>(t) * k + j] = pick[j];
  }
  return idx;
}

struct device_plan {
  dbuf<int> offsets, token, slot, position;
  device_plan(int rows, int k, int experts)
      : offsets(experts + 1),
        token(static_cast<std::size_t>(rows) * k),
        slot(static_cast<std::size_t>(rows) * k),
        position(static_cast<std::size_t>(rows) * k) {
    offsets.poison();
    token.poison();
    slot.poison();
    position.poison();
  }
  lc::route_plan_device view() const { return {offsets.get(), token.get(), slot.get(), position.get()}; }
};

void build_plan(const dbuf<int>& idx, int rows, int k, int experts, device_plan& plan) {
  const std::size_t ws = lc::route_plan_workspace_bytes(rows, k, experts);
  dbuf<unsigned char> d_ws(ws);
  d_ws.poison();
  require_ok(lc::make_route_plan(idx.get(), rows, k, experts, plan.view(), d_ws.get(), ws, nullptr),
             "make_route_plan");
  require_ok(cudaDeviceSynchronize(), "make_route_plan (kernel error)");
}

void permute_case(int rows, int k, int experts, int cols) {
  rnd r;
  const std::string tag = "permute rows=" + std::to_string(rows) + " k=" + std::to_string(k) +
                          " experts=" + std::to_string(experts) + " cols=" + std::to_string(cols);
  const auto idx = random_topk(r, rows, k, experts, true);
  const auto ref = cpu::make_route_plan(idx.data(), rows, k, experts);
  const int copies = rows * k;
  dbuf<int> d_idx(idx);
  device_plan plan(rows, k, experts);
  build_plan(d_idx, rows, k, experts, plan);
  BOOST_CHECK_MESSAGE(plan.offsets.take() == ref.expert_offsets,
                      tag << ": offsets differ (seed " << r.seed << ")");
  BOOST_CHECK_MESSAGE(plan.token.take() == ref.token, tag << ": token order differs (seed " << r.seed << ")");
  BOOST_CHECK_MESSAGE(plan.slot.take() == ref.slot, tag << ": slot order differs (seed " << r.seed << ")");
  const auto pos = plan.position.take();
  int bad_pos = 0;
  for (int i = 0; i < copies; ++i)
    if (pos[static_cast<std::size_t>(ref.token[i]) * k + ref.slot[i]] != i) ++bad_pos;
  BOOST_CHECK_MESSAGE(bad_pos == 0, tag << ": " << bad_pos << " wrong positions (seed " << r.seed << ")");

  auto x = bf16_values(r, static_cast<std::size_t>(rows) * cols);
  dbuf<bf16> d_x(to_bf16(x)), d_rows(static_cast<std::size_t>(copies) * cols);
  d_rows.poison();
  require_ok(lc::permute_rows(d_x.get(), cols, plan.view(), copies, d_rows.get(), nullptr), "permute_rows");
  std::vector<float> permuted(static_cast<std::size_t>(copies) * cols);
  cpu::permute_rows(x.data(), cols, ref, permuted.data());
  const auto got = to_float(d_rows.take());
  BOOST_CHECK_MESSAGE(got == permuted, tag << ": permute_rows differs (seed " << r.seed << ")");

  auto expert_out = bf16_values(r, static_cast<std::size_t>(copies) * cols);
  std::vector<float> w(static_cast<std::size_t>(rows) * k);
  for (auto& v : w) v = r.uniform(0.f, 1.f);
  auto y0 = bf16_values(r, static_cast<std::size_t>(rows) * cols);
  dbuf<bf16> d_eo(to_bf16(expert_out)), d_y(y0.size());
  dbuf<float> d_w(w);
  for (bool accumulate : {false, true}) {
    if (accumulate)
      d_y.put(to_bf16(y0));
    else
      d_y.poison();
    require_ok(lc::unpermute_weighted_sum(d_eo.get(), cols, plan.view(), d_w.get(), k, rows, d_y.get(),
                                          accumulate, nullptr),
               "unpermute_weighted_sum");
    std::vector<float> y = accumulate ? y0 : std::vector<float>(y0.size());
    cpu::unpermute_weighted_sum(expert_out.data(), cols, ref, w.data(), k, rows, y.data(), accumulate);
    check_close(tag + (accumulate ? " combine (accumulate)" : " combine"), d_y.take(), y, bf16_tol, r.seed);
  }

  auto dy = bf16_values(r, static_cast<std::size_t>(rows) * cols);
  dbuf<bf16> d_dy(to_bf16(dy)), d_deo(static_cast<std::size_t>(copies) * cols);
  dbuf<float> d_dw(w.size());
  d_deo.poison();
  d_dw.poison();
  require_ok(lc::unpermute_backward(d_dy.get(), d_eo.get(), cols, plan.view(), copies, d_w.get(), k,
                                    d_deo.get(), d_dw.get(), nullptr),
             "unpermute_backward");
  std::vector<float> deo(static_cast<std::size_t>(copies) * cols), dw(w.size());
  cpu::unpermute_backward(dy.data(), expert_out.data(), cols, ref, w.data(), k, deo.data(), dw.data());
  check_close(tag + " combine backward (rows)", d_deo.take(), deo, bf16_tol, r.seed);
  check_close(tag + " combine backward (weights)", d_dw.take(), dw, 1e-4, r.seed);

  for (bool accumulate : {false, true}) {
    if (accumulate)
      d_y.put(to_bf16(y0));
    else
      d_y.poison();
    require_ok(
        lc::permute_rows_backward(d_eo.get(), cols, plan.view(), k, rows, d_y.get(), accumulate, nullptr),
        "permute_rows_backward");
    std::vector<float> dx = accumulate ? y0 : std::vector<float>(y0.size());
    cpu::permute_rows_backward(expert_out.data(), cols, ref, k, rows, dx.data(), accumulate);
    check_close(tag + (accumulate ? " dispatch backward (accumulate)" : " dispatch backward"), d_y.take(), dx,
                bf16_tol, r.seed);
  }
}

// The bits of a device result, for exact comparisons (a NaN poison compares equal to itself here).
template <class T>
std::vector<std::uint16_t> bits16(const dbuf<T>& d) {
  static_assert(sizeof(T) == 2);
  const auto v = d.take();
  std::vector<std::uint16_t> out(v.size());
  std::memcpy(out.data(), v.data(), v.size() * sizeof(T));
  return out;
}
std::vector<std::uint32_t> bits32(const dbuf<float>& d) {
  const auto v = d.take();
  std::vector<std::uint32_t> out(v.size());
  std::memcpy(out.data(), v.data(), v.size() * sizeof(float));
  return out;
}
bool all_finite(const dbuf<bf16>& d) {
  for (float v : to_float(d.take()))
    if (!std::isfinite(v)) return false;
  return true;
}

// The row movers with a capped grid (max_blocks, as the runtime's SM budget passes it) give the same bits
// as with one block (or warp) per row, and every output element is written.
void permute_max_blocks_case(int rows, int k, int experts, int cols, int max_blocks) {
  rnd r;
  const std::string tag = "permute max_blocks=" + std::to_string(max_blocks) +
                          " rows=" + std::to_string(rows) + " k=" + std::to_string(k) +
                          " experts=" + std::to_string(experts) + " cols=" + std::to_string(cols);
  const auto idx = random_topk(r, rows, k, experts, true);
  const int copies = rows * k;
  dbuf<int> d_idx(idx);
  device_plan plan(rows, k, experts);
  build_plan(d_idx, rows, k, experts, plan);
  const std::size_t row_elems = static_cast<std::size_t>(rows) * cols;
  const std::size_t copy_elems = static_cast<std::size_t>(copies) * cols;
  const auto x = to_bf16(bf16_values(r, row_elems));
  const auto eo = to_bf16(bf16_values(r, copy_elems));
  const auto y0 = to_bf16(bf16_values(r, row_elems));
  const auto dy = to_bf16(bf16_values(r, row_elems));
  std::vector<float> w(static_cast<std::size_t>(rows) * k);
  for (auto& v : w) v = r.uniform(0.f, 1.f);
  dbuf<bf16> d_x(x), d_eo(eo), d_dy(dy);
  dbuf<float> d_w(w);
  auto fail = [&](const char* what) {
    return tag + ": " + what + " differs from the uncapped grid (seed " + std::to_string(r.seed) + ")";
  };

  {  // dispatch
    dbuf<bf16> full(copy_elems), capped(copy_elems);
    full.poison();
    capped.poison();
    require_ok(lc::permute_rows(d_x.get(), cols, plan.view(), copies, full.get(), nullptr), "permute_rows");
    require_ok(lc::permute_rows(d_x.get(), cols, plan.view(), copies, capped.get(), nullptr, max_blocks),
               "permute_rows (capped)");
    BOOST_CHECK_MESSAGE(all_finite(full), tag << ": permute_rows left rows unwritten");
    BOOST_CHECK_MESSAGE(bits16(capped) == bits16(full), fail("permute_rows"));
  }
  for (bool accumulate : {false, true}) {  // combine, dispatch backward
    for (bool combine : {true, false}) {
      dbuf<bf16> full(row_elems), capped(row_elems);
      if (accumulate) {
        full.put(y0);
        capped.put(y0);
      } else {
        full.poison();
        capped.poison();
      }
      for (int cap : {0, max_blocks}) {
        bf16* out = cap == 0 ? full.get() : capped.get();
        if (combine)
          require_ok(lc::unpermute_weighted_sum(d_eo.get(), cols, plan.view(), d_w.get(), k, rows, out,
                                                accumulate, nullptr, cap),
                     "unpermute_weighted_sum");
        else
          require_ok(lc::permute_rows_backward(d_eo.get(), cols, plan.view(), k, rows, out, accumulate,
                                               nullptr, cap),
                     "permute_rows_backward");
      }
      const std::string what = std::string(combine ? "unpermute_weighted_sum" : "permute_rows_backward") +
                               (accumulate ? " (accumulate)" : "");
      BOOST_CHECK_MESSAGE(all_finite(full), tag << ": " << what << " left rows unwritten");
      BOOST_CHECK_MESSAGE(bits16(capped) == bits16(full), fail(what.c_str()));
    }
  }
  {  // combine backward
    dbuf<bf16> full(copy_elems), capped(copy_elems);
    dbuf<float> full_w(w.size()), capped_w(w.size());
    for (auto* b : {&full, &capped}) b->poison();
    for (auto* b : {&full_w, &capped_w}) b->poison();
    require_ok(lc::unpermute_backward(d_dy.get(), d_eo.get(), cols, plan.view(), copies, d_w.get(), k,
                                      full.get(), full_w.get(), nullptr),
               "unpermute_backward");
    require_ok(lc::unpermute_backward(d_dy.get(), d_eo.get(), cols, plan.view(), copies, d_w.get(), k,
                                      capped.get(), capped_w.get(), nullptr, max_blocks),
               "unpermute_backward (capped)");
    BOOST_CHECK_MESSAGE(all_finite(full), tag << ": unpermute_backward left rows unwritten");
    BOOST_CHECK_MESSAGE(bits16(capped) == bits16(full), fail("unpermute_backward (rows)"));
    BOOST_CHECK_MESSAGE(bits32(capped_w) == bits32(full_w), fail("unpermute_backward (weights)"));
  }
  // A negative cap is a caller error, reported as one.
  dbuf<bf16> scratch(copy_elems);
  BOOST_CHECK(
      !lc::permute_rows(d_x.get(), cols, plan.view(), copies, scratch.get(), nullptr, -1).has_value());
}

// ------------------------------------------------------------------------------------------------

// Offsets of `groups` groups with the given row counts.
std::vector<int> offsets_of(const std::vector<int>& counts) {
  std::vector<int> off(counts.size() + 1, 0);
  for (std::size_t g = 0; g < counts.size(); ++g) off[g + 1] = off[g] + counts[g];
  return off;
}

std::vector<int> random_counts(rnd& r, int groups, int max_rows) {
  std::vector<int> c(groups);
  for (auto& v : c) {
    const int kind = r.integer(0, 5);
    v = kind == 0 ? 0 : kind == 1 ? 1 : r.integer(2, max_rows);
  }
  return c;
}

const char* impl_name(lc::grouped_impl impl) {
  return impl == lc::grouped_impl::wgmma ? "wgmma" : "mma_sync";
}

// C[rows of g] = A B_g, checked per group against cpu::gemm; rows past offsets[groups] stay unwritten.
void grouped_case(lc::grouped_impl impl, lc::weight_layout layout, const std::vector<int>& counts, int n,
                  int k, int extra_rows, lc::blas* cublas, int max_ctas = 0) {
  rnd r;
  const int groups = static_cast<int>(counts.size());
  const auto off = offsets_of(counts);
  const int used = off[groups], rows = used + extra_rows;
  const bool kn = layout == lc::weight_layout::kn;
  const std::string tag = std::string("grouped_gemm ") + (cublas != nullptr ? "cublas" : impl_name(impl)) +
                          (kn ? " x W" : " x W^T") + " groups=" + std::to_string(groups) +
                          " rows=" + std::to_string(used) + " n=" + std::to_string(n) +
                          " k=" + std::to_string(k) + " max_ctas=" + std::to_string(max_ctas);
  auto a = bf16_values(r, static_cast<std::size_t>(rows) * k);
  auto b = bf16_values(r, static_cast<std::size_t>(groups) * k * n, 0.1f);
  std::vector<float> c(static_cast<std::size_t>(rows) * n, 0.f);
  for (int g = 0; g < groups; ++g) {
    if (counts[g] == 0) continue;
    const float* bg = b.data() + static_cast<std::size_t>(g) * k * n;
    cpu::gemm(false, !kn, counts[g], n, k, 1.f, a.data() + static_cast<std::size_t>(off[g]) * k, k, bg,
              kn ? n : k, 0.f, c.data() + static_cast<std::size_t>(off[g]) * n, n);
  }
  dbuf<bf16> d_a(to_bf16(a)), d_b(to_bf16(b)), d_c(c.size());
  dbuf<int> d_off(off);
  d_c.poison();
  if (cublas != nullptr) {
    dbuf<void*> scratch(3 * static_cast<std::size_t>(groups));
    require_ok(lc::grouped_gemm_cublas(*cublas, d_a.get(), d_b.get(), layout, d_c.get(), off.data(), groups,
                                       n, k, scratch.get(), nullptr),
               "grouped_gemm_cublas");
    require_ok(cudaDeviceSynchronize(), "grouped_gemm_cublas (kernel error)");
  } else {
    require_ok(lc::grouped_gemm(d_a.get(), d_b.get(), layout, d_c.get(), d_off.get(), groups, rows, n, k,
                                nullptr, impl, max_ctas),
               "grouped_gemm");
  }
  const auto got = to_float(d_c.take());
  check_close(tag, rows_of(got, n, 0, used), rows_of(c, n, 0, used), bf16_tol, r.seed);
  if (extra_rows > 0) {
    const auto tail = rows_of(got, n, used, rows);
    const bool untouched = std::all_of(tail.begin(), tail.end(), [](float v) { return std::isnan(v); });
    BOOST_CHECK_MESSAGE(untouched, tag << ": rows past the last group were written (seed " << r.seed << ")");
  }
}

// C_g += A_g^T B_g (fp32), against cpu::gemm per group; groups without rows keep their values.
void wgrad_case(lc::grouped_impl impl, const std::vector<int>& counts, int m, int n, int max_ctas = 0) {
  rnd r;
  const int groups = static_cast<int>(counts.size());
  const auto off = offsets_of(counts);
  const int rows = off[groups];
  const std::string tag = std::string("grouped_gemm_wgrad ") + impl_name(impl) +
                          " groups=" + std::to_string(groups) + " rows=" + std::to_string(rows) +
                          " m=" + std::to_string(m) + " n=" + std::to_string(n) + " max_ctas=" + std::to_string(max_ctas);
  auto a = bf16_values(r, static_cast<std::size_t>(rows) * m);
  auto b = bf16_values(r, static_cast<std::size_t>(rows) * n);
  std::vector<float> c(static_cast<std::size_t>(groups) * m * n);
  for (auto& v : c) v = r.normal();
  const auto c0 = c;
  for (int g = 0; g < groups; ++g) {
    if (counts[g] == 0) continue;
    cpu::gemm(true, false, m, n, counts[g], 1.f, a.data() + static_cast<std::size_t>(off[g]) * m, m,
              b.data() + static_cast<std::size_t>(off[g]) * n, n, 1.f,
              c.data() + static_cast<std::size_t>(g) * m * n, n);
  }
  dbuf<bf16> d_a(to_bf16(a)), d_b(to_bf16(b));
  dbuf<float> d_c(c0);
  dbuf<int> d_off(off);
  require_ok(
      lc::grouped_gemm_wgrad(d_a.get(), d_b.get(), d_c.get(), d_off.get(), groups, rows, m, n, nullptr, impl, max_ctas),
      "grouped_gemm_wgrad");
  const auto got = d_c.take();
  // The increments only, so the random starting values do not hide an error.
  std::vector<float> inc_gpu(c.size()), inc_cpu(c.size());
  for (std::size_t i = 0; i < c.size(); ++i) {
    inc_gpu[i] = got[i] - c0[i];
    inc_cpu[i] = c[i] - c0[i];
  }
  check_close(tag, inc_gpu, inc_cpu, bf16_tol, r.seed);
  for (int g = 0; g < groups; ++g) {
    if (counts[g] != 0) continue;
    const std::size_t b0 = static_cast<std::size_t>(g) * m * n;
    BOOST_CHECK_MESSAGE(
        std::equal(got.begin() + b0, got.begin() + b0 + static_cast<std::size_t>(m) * n, c0.begin() + b0),
        tag << ": empty group " << g << " was changed (seed " << r.seed << ")");
  }
}

// ------------------------------------------------------------------------------------------------

void gemm_case(lc::blas& blas, bool ta, bool tb, int m, int n, int k, bool fp32_out, int sm_target = 0) {
  rnd r;
  const std::string tag = std::string("blas gemm ") + (ta ? "T" : "N") + (tb ? "T" : "N") +
                          " m=" + std::to_string(m) + " n=" + std::to_string(n) + " k=" + std::to_string(k) +
                          (fp32_out ? " fp32 out, beta=1" : "") + (sm_target > 0 ? " sm_target=" + std::to_string(sm_target) : "");
  auto a = bf16_values(r, static_cast<std::size_t>(m) * k);
  auto b = bf16_values(r, static_cast<std::size_t>(k) * n);
  const int lda = ta ? m : k, ldb = tb ? k : n;
  std::vector<float> c0(static_cast<std::size_t>(m) * n);
  for (auto& v : c0) v = r.normal();
  std::vector<float> c = fp32_out ? c0 : std::vector<float>(c0.size());
  cpu::gemm(ta, tb, m, n, k, 0.5f, a.data(), lda, b.data(), ldb, fp32_out ? 1.f : 0.f, c.data(), n);
  dbuf<bf16> d_a(to_bf16(a)), d_b(to_bf16(b));
  if (fp32_out) {
    dbuf<float> d_c(c0);
    require_ok(blas.gemm(ta, tb, m, n, k, 0.5f, d_a.get(), lda, d_b.get(), ldb, 1.f, d_c.get(), n, nullptr, sm_target),
               "blas::gemm");
    check_close(tag, d_c.take(), c, 1e-3, r.seed);
  } else {
    dbuf<bf16> d_c(c.size());
    d_c.poison();
    require_ok(blas.gemm(ta, tb, m, n, k, 0.5f, d_a.get(), lda, d_b.get(), ldb, 0.f, d_c.get(), n, nullptr, sm_target),
               "blas::gemm");
    check_close(tag, d_c.take(), c, bf16_tol, r.seed);
  }
}

// ------------------------------------------------------------------------------------------------

void swiglu_elementwise_case(int rows, int ffn) {
  rnd r;
  const std::string tag = "swiglu elementwise rows=" + std::to_string(rows) + " ffn=" + std::to_string(ffn);
  const int ld = 2 * ffn;
  auto h = bf16_values(r, static_cast<std::size_t>(rows) * ld, 2.f);
  auto da = bf16_values(r, static_cast<std::size_t>(rows) * ffn);
  std::vector<float> act(static_cast<std::size_t>(rows) * ffn), dh(static_cast<std::size_t>(rows) * ld);
  for (int t = 0; t < rows; ++t)
    for (int c = 0; c < ffn; ++c) {
      const double h1 = h[static_cast<std::size_t>(t) * ld + c],
                   h3 = h[static_cast<std::size_t>(t) * ld + ffn + c];
      const double s = 1.0 / (1.0 + std::exp(-h1)), g = da[static_cast<std::size_t>(t) * ffn + c];
      act[static_cast<std::size_t>(t) * ffn + c] = static_cast<float>(h1 * s * h3);
      dh[static_cast<std::size_t>(t) * ld + c] = static_cast<float>(g * h3 * s * (1 + h1 * (1 - s)));
      dh[static_cast<std::size_t>(t) * ld + ffn + c] = static_cast<float>(g * h1 * s);
    }
  dbuf<bf16> d_h(to_bf16(h)), d_act(act.size()), d_da(to_bf16(da)), d_dh(dh.size());
  d_act.poison();
  d_dh.poison();
  require_ok(lc::swiglu_forward(d_h.get(), d_h.get() + ffn, ld, d_act.get(), ffn, rows, ffn, nullptr),
             "swiglu_forward");
  check_close(tag + " forward", d_act.take(), act, bf16_tol, r.seed);
  require_ok(lc::swiglu_backward(d_da.get(), ffn, d_h.get(), d_h.get() + ffn, ld, d_dh.get(),
                                 d_dh.get() + ffn, ld, rows, ffn, nullptr),
             "swiglu_backward");
  check_close(tag + " backward", d_dh.take(), dh, bf16_tol, r.seed);
}

// The routed experts end to end on one GPU: route plan -> permute -> grouped GEMM [W1|W3] -> SwiGLU ->
// grouped GEMM W2 -> combine, the backward for inputs and for weights, and the shared expert through
// cublasLt; against cpu::swiglu_* per expert and cpu::unpermute_* / permute_*.
void expert_mlp_case(lc::blas& blas, lc::grouped_impl impl, int tokens, int d, int f, int experts, int k,
                     int fs) {
  rnd r;
  const std::string tag = std::string("expert mlp ") + impl_name(impl) + " tokens=" + std::to_string(tokens) +
                          " hidden=" + std::to_string(d) + " ffn=" + std::to_string(f) +
                          " experts=" + std::to_string(experts) + " k=" + std::to_string(k);
  const int copies = tokens * k;
  const auto idx = random_topk(r, tokens, k, experts, true);
  const auto plan_ref = cpu::make_route_plan(idx.data(), tokens, k, experts);
  auto u = bf16_values(r, static_cast<std::size_t>(tokens) * d);
  auto w13 = bf16_values(r, static_cast<std::size_t>(experts) * d * 2 * f, 0.1f);
  auto w2 = bf16_values(r, static_cast<std::size_t>(experts) * f * d, 0.1f);
  std::vector<float> tw(static_cast<std::size_t>(tokens) * k);
  for (auto& v : tw) v = r.uniform(0.f, 1.f);
  auto dy = bf16_values(r, static_cast<std::size_t>(tokens) * d);

  // CPU reference.
  std::vector<float> xs(static_cast<std::size_t>(copies) * d);
  cpu::permute_rows(u.data(), d, plan_ref, xs.data());
  std::vector<float> out(static_cast<std::size_t>(copies) * d), dxs(xs.size());
  std::vector<float> dw13(static_cast<std::size_t>(experts) * d * 2 * f, 0.f),
      dw2(static_cast<std::size_t>(experts) * f * d, 0.f);
  std::vector<float> y(static_cast<std::size_t>(tokens) * d), d_out(out.size()), dtw(tw.size()), du(y.size());
  {
    std::vector<float> eo_tmp(out.size());
    for (int e = 0; e < experts; ++e) {
      const int o0 = plan_ref.expert_offsets[e], n = plan_ref.expert_offsets[e + 1] - o0;
      if (n == 0) continue;
      std::vector<float> w1(static_cast<std::size_t>(d) * f), w3(w1.size());
      for (int i = 0; i < d; ++i)
        for (int c = 0; c < f; ++c) {
          w1[static_cast<std::size_t>(i) * f + c] = w13[(static_cast<std::size_t>(e) * d + i) * 2 * f + c];
          w3[static_cast<std::size_t>(i) * f + c] =
              w13[(static_cast<std::size_t>(e) * d + i) * 2 * f + f + c];
        }
      const cpu::swiglu_weights w{w1.data(), w3.data(), w2.data() + static_cast<std::size_t>(e) * f * d};
      std::vector<float> h1(static_cast<std::size_t>(n) * f), h3(h1.size()), act(h1.size());
      cpu::swiglu_forward(xs.data() + static_cast<std::size_t>(o0) * d, n, d, f, w, h1.data(), h3.data(),
                          act.data(), out.data() + static_cast<std::size_t>(o0) * d, false);
    }
    cpu::unpermute_weighted_sum(out.data(), d, plan_ref, tw.data(), k, tokens, y.data(), false);
    cpu::unpermute_backward(dy.data(), out.data(), d, plan_ref, tw.data(), k, d_out.data(), dtw.data());
    for (int e = 0; e < experts; ++e) {
      const int o0 = plan_ref.expert_offsets[e], n = plan_ref.expert_offsets[e + 1] - o0;
      if (n == 0) continue;
      std::vector<float> w1(static_cast<std::size_t>(d) * f), w3(w1.size());
      for (int i = 0; i < d; ++i)
        for (int c = 0; c < f; ++c) {
          w1[static_cast<std::size_t>(i) * f + c] = w13[(static_cast<std::size_t>(e) * d + i) * 2 * f + c];
          w3[static_cast<std::size_t>(i) * f + c] =
              w13[(static_cast<std::size_t>(e) * d + i) * 2 * f + f + c];
        }
      const cpu::swiglu_weights w{w1.data(), w3.data(), w2.data() + static_cast<std::size_t>(e) * f * d};
      std::vector<float> h1(static_cast<std::size_t>(n) * f), h3(h1.size()), act(h1.size()),
          o(static_cast<std::size_t>(n) * d);
      const float* x = xs.data() + static_cast<std::size_t>(o0) * d;
      cpu::swiglu_forward(x, n, d, f, w, h1.data(), h3.data(), act.data(), o.data(), false);
      std::vector<float> dh1(h1.size()), dh3(h1.size());
      const float* g = d_out.data() + static_cast<std::size_t>(o0) * d;
      cpu::swiglu_backward_input(g, n, d, f, w, h1.data(), h3.data(), dh1.data(), dh3.data(),
                                 dxs.data() + static_cast<std::size_t>(o0) * d, false);
      std::vector<float> g1(static_cast<std::size_t>(d) * f, 0.f), g3(g1.size(), 0.f);
      cpu::swiglu_backward_weight(x, act.data(), g, dh1.data(), dh3.data(), n, d, f, g1.data(), g3.data(),
                                  dw2.data() + static_cast<std::size_t>(e) * f * d);
      for (int i = 0; i < d; ++i)
        for (int c = 0; c < f; ++c) {
          dw13[(static_cast<std::size_t>(e) * d + i) * 2 * f + c] = g1[static_cast<std::size_t>(i) * f + c];
          dw13[(static_cast<std::size_t>(e) * d + i) * 2 * f + f + c] =
              g3[static_cast<std::size_t>(i) * f + c];
        }
    }
    cpu::permute_rows_backward(dxs.data(), d, plan_ref, k, tokens, du.data(), false);
  }

  // GPU.
  dbuf<int> d_idx(idx);
  device_plan plan(tokens, k, experts);
  build_plan(d_idx, tokens, k, experts, plan);
  dbuf<bf16> d_u(to_bf16(u)), d_w13(to_bf16(w13)), d_w2(to_bf16(w2)), d_dy(to_bf16(dy));
  dbuf<float> d_tw(tw);
  dbuf<bf16> d_xs(xs.size()), d_h13(static_cast<std::size_t>(copies) * 2 * f),
      d_act(static_cast<std::size_t>(copies) * f), d_eo(out.size()), d_y(y.size()), d_dout(out.size()),
      d_dact(static_cast<std::size_t>(copies) * f), d_dh13(static_cast<std::size_t>(copies) * 2 * f),
      d_dxs(xs.size()), d_du(du.size());
  dbuf<float> d_dtw(tw.size()), d_dw13(dw13.size()), d_dw2(dw2.size());
  for (auto* b : {&d_xs, &d_h13, &d_act, &d_eo, &d_y, &d_dout, &d_dact, &d_dh13, &d_dxs, &d_du}) b->poison();
  d_dtw.poison();
  require_ok(cudaMemset(d_dw13.get(), 0, dw13.size() * sizeof(float)), "cudaMemset");
  require_ok(cudaMemset(d_dw2.get(), 0, dw2.size() * sizeof(float)), "cudaMemset");
  const auto pv = plan.view();
  const int* offs = plan.offsets.get();
  require_ok(lc::permute_rows(d_u.get(), d, pv, copies, d_xs.get(), nullptr), "permute_rows");
  require_ok(lc::grouped_gemm(d_xs.get(), d_w13.get(), lc::weight_layout::kn, d_h13.get(), offs, experts,
                              copies, 2 * f, d, nullptr, impl),
             "grouped_gemm [W1|W3]");
  require_ok(lc::swiglu_forward(d_h13.get(), d_h13.get() + f, 2 * f, d_act.get(), f, copies, f, nullptr),
             "swiglu_forward");
  require_ok(lc::grouped_gemm(d_act.get(), d_w2.get(), lc::weight_layout::kn, d_eo.get(), offs, experts,
                              copies, d, f, nullptr, impl),
             "grouped_gemm W2");
  require_ok(lc::unpermute_weighted_sum(d_eo.get(), d, pv, d_tw.get(), k, tokens, d_y.get(), false, nullptr),
             "combine");
  require_ok(lc::unpermute_backward(d_dy.get(), d_eo.get(), d, pv, copies, d_tw.get(), k, d_dout.get(),
                                    d_dtw.get(), nullptr),
             "combine backward");
  require_ok(lc::grouped_gemm(d_dout.get(), d_w2.get(), lc::weight_layout::nk, d_dact.get(), offs, experts,
                              copies, f, d, nullptr, impl),
             "grouped_gemm dy W2^T");
  require_ok(lc::swiglu_backward(d_dact.get(), f, d_h13.get(), d_h13.get() + f, 2 * f, d_dh13.get(),
                                 d_dh13.get() + f, 2 * f, copies, f, nullptr),
             "swiglu_backward");
  require_ok(lc::grouped_gemm(d_dh13.get(), d_w13.get(), lc::weight_layout::nk, d_dxs.get(), offs, experts,
                              copies, d, 2 * f, nullptr, impl),
             "grouped_gemm dh [W1|W3]^T");
  require_ok(lc::permute_rows_backward(d_dxs.get(), d, pv, k, tokens, d_du.get(), false, nullptr),
             "dispatch backward");
  require_ok(lc::grouped_gemm_wgrad(d_xs.get(), d_dh13.get(), d_dw13.get(), offs, experts, copies, d, 2 * f,
                                    nullptr, impl),
             "wgrad [W1|W3]");
  require_ok(lc::grouped_gemm_wgrad(d_act.get(), d_dout.get(), d_dw2.get(), offs, experts, copies, f, d,
                                    nullptr, impl),
             "wgrad W2");
  check_close(tag + " expert out", d_eo.take(), out, bf16_tol, r.seed);
  check_close(tag + " combine y", d_y.take(), y, bf16_tol, r.seed);
  check_close(tag + " d topk weight", d_dtw.take(), dtw, bf16_tol, r.seed);
  check_close(tag + " d expert in", d_dxs.take(), dxs, bf16_tol, r.seed);
  check_close(tag + " du", d_du.take(), du, bf16_tol, r.seed);
  check_close(tag + " dW1|W3", d_dw13.take(), dw13, bf16_tol, r.seed);
  check_close(tag + " dW2", d_dw2.take(), dw2, bf16_tol, r.seed);

  if (fs <= 0) return;
  // The shared expert on u through cublasLt: [Ws1|Ws3] [d, 2 fs], Ws2 [fs, d].
  auto ws13 = bf16_values(r, static_cast<std::size_t>(d) * 2 * fs, 0.1f);
  auto ws2 = bf16_values(r, static_cast<std::size_t>(fs) * d, 0.1f);
  std::vector<float> s1(static_cast<std::size_t>(d) * fs), s3(s1.size());
  for (int i = 0; i < d; ++i)
    for (int c = 0; c < fs; ++c) {
      s1[static_cast<std::size_t>(i) * fs + c] = ws13[static_cast<std::size_t>(i) * 2 * fs + c];
      s3[static_cast<std::size_t>(i) * fs + c] = ws13[static_cast<std::size_t>(i) * 2 * fs + fs + c];
    }
  const cpu::swiglu_weights sw{s1.data(), s3.data(), ws2.data()};
  std::vector<float> sh1(static_cast<std::size_t>(tokens) * fs), sh3(sh1.size()), sact(sh1.size()),
      ys(y.size());
  cpu::swiglu_forward(u.data(), tokens, d, fs, sw, sh1.data(), sh3.data(), sact.data(), ys.data(), false);
  std::vector<float> dsh1(sh1.size()), dsh3(sh1.size()), dus(du.size());
  cpu::swiglu_backward_input(dy.data(), tokens, d, fs, sw, sh1.data(), sh3.data(), dsh1.data(), dsh3.data(),
                             dus.data(), false);
  std::vector<float> g1(s1.size(), 0.f), g3(s1.size(), 0.f), g2(ws2.size(), 0.f);
  cpu::swiglu_backward_weight(u.data(), sact.data(), dy.data(), dsh1.data(), dsh3.data(), tokens, d, fs,
                              g1.data(), g3.data(), g2.data());
  dbuf<bf16> d_ws13(to_bf16(ws13)), d_ws2(to_bf16(ws2)), d_sh(static_cast<std::size_t>(tokens) * 2 * fs),
      d_sact(sact.size()), d_ys(ys.size()), d_dsact(sact.size()), d_dsh(d_sh.size()), d_dus(dus.size());
  dbuf<float> d_g13(static_cast<std::size_t>(d) * 2 * fs), d_g2(g2.size());
  for (auto* b : {&d_sh, &d_sact, &d_ys, &d_dsact, &d_dsh, &d_dus}) b->poison();
  require_ok(cudaMemset(d_g13.get(), 0, d_g13.size() * sizeof(float)), "cudaMemset");
  require_ok(cudaMemset(d_g2.get(), 0, d_g2.size() * sizeof(float)), "cudaMemset");
  require_ok(blas.gemm(false, false, tokens, 2 * fs, d, 1.f, d_u.get(), d, d_ws13.get(), 2 * fs, 0.f,
                       d_sh.get(), 2 * fs, nullptr),
             "shared u [Ws1|Ws3]");
  require_ok(lc::swiglu_forward(d_sh.get(), d_sh.get() + fs, 2 * fs, d_sact.get(), fs, tokens, fs, nullptr),
             "shared swiglu");
  require_ok(blas.gemm(false, false, tokens, d, fs, 1.f, d_sact.get(), fs, d_ws2.get(), d, 0.f, d_ys.get(), d,
                       nullptr),
             "shared act Ws2");
  require_ok(blas.gemm(false, true, tokens, fs, d, 1.f, d_dy.get(), d, d_ws2.get(), d, 0.f, d_dsact.get(), fs,
                       nullptr),
             "shared dy Ws2^T");
  require_ok(lc::swiglu_backward(d_dsact.get(), fs, d_sh.get(), d_sh.get() + fs, 2 * fs, d_dsh.get(),
                                 d_dsh.get() + fs, 2 * fs, tokens, fs, nullptr),
             "shared swiglu backward");
  require_ok(blas.gemm(false, true, tokens, d, 2 * fs, 1.f, d_dsh.get(), 2 * fs, d_ws13.get(), 2 * fs, 0.f,
                       d_dus.get(), d, nullptr),
             "shared dh [Ws1|Ws3]^T");
  require_ok(blas.gemm(true, false, d, 2 * fs, tokens, 1.f, d_u.get(), d, d_dsh.get(), 2 * fs, 1.f,
                       d_g13.get(), 2 * fs, nullptr),
             "shared dWs13");
  require_ok(blas.gemm(true, false, fs, d, tokens, 1.f, d_sact.get(), fs, d_dy.get(), d, 1.f, d_g2.get(), d,
                       nullptr),
             "shared dWs2");
  std::vector<float> g13(static_cast<std::size_t>(d) * 2 * fs);
  for (int i = 0; i < d; ++i)
    for (int c = 0; c < fs; ++c) {
      g13[static_cast<std::size_t>(i) * 2 * fs + c] = g1[static_cast<std::size_t>(i) * fs + c];
      g13[static_cast<std::size_t>(i) * 2 * fs + fs + c] = g3[static_cast<std::size_t>(i) * fs + c];
    }
  check_close(tag + " shared expert out", d_ys.take(), ys, bf16_tol, r.seed);
  check_close(tag + " shared expert du", d_dus.take(), dus, bf16_tol, r.seed);
  check_close(tag + " shared expert dWs1|Ws3", d_g13.take(), g13, bf16_tol, r.seed);
  check_close(tag + " shared expert dWs2", d_g2.take(), g2, bf16_tol, r.seed);
}

// ------------------------------------------------------------------------------------------------

void loss_case(int rows, int vocab) {
  rnd r;
  const std::string tag = "cross_entropy rows=" + std::to_string(rows) + " vocab=" + std::to_string(vocab);
  auto logits = bf16_values(r, static_cast<std::size_t>(rows) * vocab, 3.f);
  std::vector<int> targets(rows);
  for (auto& t : targets) t = r.integer(0, vocab - 1);
  const float scale = 1.f / static_cast<float>(rows);
  std::vector<float> dl(logits.size());
  const double loss = cpu::cross_entropy(logits.data(), targets.data(), rows, vocab, scale, dl.data());
  dbuf<bf16> d_logits(to_bf16(logits)), d_dl(dl.size());
  dbuf<int> d_t(targets);
  dbuf<float> d_row(rows);
  dbuf<double> d_sum(std::vector<double>{0.5});
  d_dl.poison();
  d_row.poison();
  require_ok(lc::cross_entropy(d_logits.get(), d_t.get(), rows, vocab, scale, d_dl.get(), d_row.get(),
                               d_sum.get(), nullptr),
             "cross_entropy");
  check_close(tag + " dlogits", d_dl.take(), dl, bf16_tol, r.seed);
  const double got = d_sum.take()[0] - 0.5;
  BOOST_CHECK_MESSAGE(std::fabs(got - loss) <= 1e-4 * std::max(1.0, std::fabs(loss)),
                      tag << ": loss " << got << " vs " << loss << " (seed " << r.seed << ")");
  const auto rl = d_row.take();
  const double rsum = std::accumulate(rl.begin(), rl.end(), 0.0);
  BOOST_CHECK_MESSAGE(std::fabs(rsum - loss) <= 1e-4 * std::max(1.0, std::fabs(loss)),
                      tag << ": row losses do not add up");
}

void embedding_case(int vocab, int rows, int dim) {
  rnd r;
  const std::string tag = "embedding vocab=" + std::to_string(vocab) + " rows=" + std::to_string(rows) +
                          " dim=" + std::to_string(dim);
  auto table = bf16_values(r, static_cast<std::size_t>(vocab) * dim);
  std::vector<int> ids(rows);
  for (auto& i : ids) i = r.integer(0, vocab - 1);
  auto dout = bf16_values(r, static_cast<std::size_t>(rows) * dim);
  std::vector<float> out(static_cast<std::size_t>(rows) * dim), dt0(table.size());
  for (auto& v : dt0) v = r.normal();
  auto dt = dt0;
  cpu::embedding_forward(table.data(), ids.data(), rows, dim, out.data());
  cpu::embedding_backward(dout.data(), ids.data(), rows, dim, dt.data());
  dbuf<bf16> d_table(to_bf16(table)), d_out(out.size()), d_dout(to_bf16(dout));
  dbuf<int> d_ids(ids);
  dbuf<float> d_dt(dt0);
  d_out.poison();
  require_ok(lc::embedding_forward(d_table.get(), d_ids.get(), rows, dim, d_out.get(), nullptr),
             "embedding_forward");
  require_ok(lc::embedding_backward(d_dout.get(), d_ids.get(), rows, dim, d_dt.get(), nullptr),
             "embedding_backward");
  BOOST_CHECK_MESSAGE(to_float(d_out.take()) == out, tag << ": forward differs (seed " << r.seed << ")");
  check_close(tag + " backward", d_dt.take(), dt, 1e-5, r.seed);
}

void adamw_case(std::size_t n, int steps) {
  rnd r;
  const std::string tag = "adamw n=" + std::to_string(n) + " steps=" + std::to_string(steps);
  std::vector<float> p(n), m(n, 0.f), v(n, 0.f);
  for (auto& x : p) x = r.normal(0.1f);
  dbuf<float> d_p(p), d_m(m), d_v(v), d_g(n);
  dbuf<bf16> d_pb(n);
  cpu::adamw_config cc;
  lc::adamw_config gc;
  cc.lr = gc.lr = 3e-3f;
  for (int step = 1; step <= steps; ++step) {
    std::vector<float> g(n);
    for (auto& x : g) x = r.normal(0.01f);
    d_g.put(g);
    d_pb.poison();
    cpu::adamw_step(p.data(), g.data(), m.data(), v.data(), n, cc, step);
    require_ok(lc::adamw_step(d_p.get(), d_g.get(), d_m.get(), d_v.get(), d_pb.get(), n, gc, step, nullptr),
               "adamw_step");
  }
  check_close(tag + " param", d_p.take(), p, 1e-5, r.seed);
  check_close(tag + " m", d_m.take(), m, 1e-5, r.seed);
  check_close(tag + " v", d_v.take(), v, 1e-5, r.seed);
  std::vector<float> pb(n);
  for (std::size_t i = 0; i < n; ++i) pb[i] = round_bf16(p[i]);
  check_close(tag + " bf16 copy", d_pb.take(), pb, 1e-2, r.seed);
}

}  // namespace
#endif  // LOOM_WITH_CUDA

// ------------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_SUITE(gpu_rmsnorm, *boost::unit_test::precondition(loom::test::gpu_present))
BOOST_AUTO_TEST_CASE(matches_cpu) {
#if LOOM_WITH_CUDA
  rmsnorm_case(1, 64);
  rmsnorm_case(37, 200);
  rmsnorm_case(300, 50);  // dim not a multiple of 8: scalar path
  rmsnorm_case(513, 4096);
#endif
}
BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(gpu_attention, *boost::unit_test::precondition(loom::test::gpu_present))
BOOST_AUTO_TEST_CASE(matches_cpu_head_dim_64) {
#if LOOM_WITH_CUDA
  attention_case(3, 1, 2, 64);   // seq_len 1
  attention_case(2, 77, 3, 64);  // rows not a multiple of any tile
  attention_case(1, 300, 2, 64);
  attention_case(2, 384, 1, 64);
#endif
}
BOOST_AUTO_TEST_CASE(matches_cpu_head_dim_128) {
#if LOOM_WITH_CUDA
  attention_case(2, 1, 1, 128);
  attention_case(2, 129, 2, 128);
  attention_case(1, 513, 2, 128);
  attention_case(3, 256, 2, 128);  // several sequences of whole tiles (TMA rows run into the next sequence)
#endif
}
BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(gpu_router, *boost::unit_test::precondition(loom::test::gpu_present))
BOOST_AUTO_TEST_CASE(softmax_gating) {
#if LOOM_WITH_CUDA
  router_case(cpu::gating::softmax, 1, 8, 2, false, false);
  router_case(cpu::gating::softmax, 300, 64, 6, false, false);
  router_case(cpu::gating::softmax, 100, 8, 8, false, false);  // k = experts
  router_case(cpu::gating::softmax, 200, 300, 8, false, false);
  router_case(cpu::gating::softmax, 200, 16, 4, false, true);  // exact ties go to the lower index
#endif
}
BOOST_AUTO_TEST_CASE(sigmoid_gating) {
#if LOOM_WITH_CUDA
  router_case(cpu::gating::sigmoid, 257, 256, 8, true, false);
  router_case(cpu::gating::sigmoid, 50, 40, 3, false, false);
  router_case(cpu::gating::sigmoid, 64, 5, 5, true, false);  // k = experts
  router_case(cpu::gating::sigmoid, 200, 33, 4, true, true);
  router_bias_case();
#endif
}
BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(gpu_permute, *boost::unit_test::precondition(loom::test::gpu_present))
BOOST_AUTO_TEST_CASE(route_plan_dispatch_combine) {
#if LOOM_WITH_CUDA
  permute_case(1, 1, 1, 64);
  permute_case(5, 2, 8, 13);       // scalar row path
  permute_case(1000, 4, 16, 72);   // empty experts
  permute_case(3000, 2, 300, 64);  // several chunks, many slots
  permute_case(100, 4, 4, 40);     // k = experts
#endif
}
BOOST_AUTO_TEST_CASE(capped_grid_matches_uncapped) {
#if LOOM_WITH_CUDA
  permute_max_blocks_case(3000, 2, 300, 64, 3);    // vector path, many rows per block
  permute_max_blocks_case(5, 2, 8, 13, 3);         // scalar path
  permute_max_blocks_case(2000, 4, 16, 1024, 20);  // the runtime's budget at hidden 1024
  permute_max_blocks_case(1000, 6, 64, 2048, 20);  // the layer's shape class, a 20-SM budget
  permute_max_blocks_case(1000, 4, 16, 72, 1);     // one block does everything
  permute_max_blocks_case(7, 2, 4, 64, 100000);    // a cap above the need changes nothing
#endif
}
BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(gpu_grouped_gemm, *boost::unit_test::precondition(loom::test::gpu_present))
BOOST_AUTO_TEST_CASE(grouped_matches_cpu) {
#if LOOM_WITH_CUDA
  for (auto impl : {lc::grouped_impl::wgmma, lc::grouped_impl::mma_sync}) {
    for (auto layout : {lc::weight_layout::kn, lc::weight_layout::nk}) {
      grouped_case(impl, layout, {7}, 8, 8, 0, nullptr);
      grouped_case(impl, layout, {0, 1, 130, 0, 257}, 72, 40, 5, nullptr);  // empty groups, partial tiles
      grouped_case(impl, layout, {300, 0, 31}, 264, 200, 0, nullptr);       // n past one 256-wide tile
      rnd r;
      grouped_case(impl, layout, random_counts(r, 16, 200), 512, 1024, 3, nullptr);
    }
  }
#endif
}
BOOST_AUTO_TEST_CASE(wgrad_matches_cpu) {
#if LOOM_WITH_CUDA
  for (auto impl : {lc::grouped_impl::wgmma, lc::grouped_impl::mma_sync}) {
    wgrad_case(impl, {5}, 8, 8);
    wgrad_case(impl, {0, 70, 1, 64, 129}, 136, 72);  // partial k blocks, an empty group
    wgrad_case(impl, {200, 0, 333}, 200, 264);
    rnd r;
    wgrad_case(impl, random_counts(r, 8, 300), 256, 512);
  }
#endif
}
// Beside comm kernels the persistent grid is capped (a few CTAs walk every tile) or, at most, one CTA a
// tile: the same products either way.
BOOST_AUTO_TEST_CASE(grouped_grids_of_any_size_match_cpu) {
#if LOOM_WITH_CUDA
  for (int ctas : {1, 3, 112, 1 << 20}) {
    rnd r;
    const auto counts = random_counts(r, 16, 300);
    grouped_case(lc::grouped_impl::wgmma, lc::weight_layout::kn, counts, 512, 256, 2, nullptr, ctas);
    grouped_case(lc::grouped_impl::wgmma, lc::weight_layout::nk, counts, 128, 256, 0, nullptr, ctas);
    wgrad_case(lc::grouped_impl::wgmma, counts, 256, 512, ctas);
  }
#endif
}
BOOST_AUTO_TEST_CASE(cublas_grouped_matches_cpu) {
#if LOOM_WITH_CUDA
  auto blas = lc::blas::create();
  BOOST_REQUIRE_MESSAGE(blas.has_value(), (blas ? "" : blas.error().message));
  for (auto layout : {lc::weight_layout::kn, lc::weight_layout::nk})
    grouped_case(lc::grouped_impl::wgmma, layout, {0, 33, 130, 7}, 72, 64, 0, blas->get());
#endif
}
BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(gpu_gemm, *boost::unit_test::precondition(loom::test::gpu_present))
BOOST_AUTO_TEST_CASE(cublaslt_matches_cpu) {
#if LOOM_WITH_CUDA
  auto blas = lc::blas::create();
  BOOST_REQUIRE_MESSAGE(blas.has_value(), (blas ? "" : blas.error().message));
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      gemm_case(**blas, ta, tb, 37, 72, 40, false);
      gemm_case(**blas, ta, tb, 64, 24, 200, true);
    }
  gemm_case(**blas, false, false, 1000, 512, 256, false);
  // Beside comm kernels: a kernel chosen for fewer SMs gives the same product.
  gemm_case(**blas, false, true, 1000, 512, 256, false, 112);
  gemm_case(**blas, true, false, 256, 512, 1000, true, 16);
#endif
}
BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(gpu_swiglu, *boost::unit_test::precondition(loom::test::gpu_present))
BOOST_AUTO_TEST_CASE(elementwise_matches_cpu) {
#if LOOM_WITH_CUDA
  swiglu_elementwise_case(1, 8);
  swiglu_elementwise_case(77, 40);
  swiglu_elementwise_case(33, 13);  // scalar path
#endif
}
BOOST_AUTO_TEST_CASE(expert_mlp_matches_cpu) {
#if LOOM_WITH_CUDA
  auto blas = lc::blas::create();
  BOOST_REQUIRE_MESSAGE(blas.has_value(), (blas ? "" : blas.error().message));
  for (auto impl : {lc::grouped_impl::wgmma, lc::grouped_impl::mma_sync}) {
    expert_mlp_case(**blas, impl, 100, 64, 40, 6, 2, 48);
    expert_mlp_case(**blas, impl, 333, 128, 96, 8, 4, 0);
  }
#endif
}
BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(gpu_loss, *boost::unit_test::precondition(loom::test::gpu_present))
BOOST_AUTO_TEST_CASE(cross_entropy_and_embedding) {
#if LOOM_WITH_CUDA
  loss_case(1, 10);
  loss_case(33, 1000);
  loss_case(64, 32000);
  embedding_case(100, 50, 64);
  embedding_case(7, 300, 13);
#endif
}
BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(gpu_adamw, *boost::unit_test::precondition(loom::test::gpu_present))
BOOST_AUTO_TEST_CASE(matches_cpu) {
#if LOOM_WITH_CUDA
  adamw_case(1, 1);
  adamw_case(7, 3);
  adamw_case(100003, 10);
#endif
}
BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(gpu_memory, *boost::unit_test::precondition(loom::test::gpu_present))
BOOST_AUTO_TEST_CASE(pool_reuses_freed_memory) {
#if LOOM_WITH_CUDA
  auto pool = lc::device_pool::create(0);
  BOOST_REQUIRE_MESSAGE(pool.has_value(), (pool ? "" : pool.error().message));
  cudaStream_t stream = nullptr;
  require_ok(cudaStreamCreate(&stream), "cudaStreamCreate");
  {
    auto a = lc::device_buffer<float>::create(*pool, 1 << 20, stream);
    BOOST_REQUIRE_MESSAGE(a.has_value(), (a ? "" : a.error().message));
    require_ok(cudaMemsetAsync(a->data(), 0, a->bytes(), stream), "cudaMemsetAsync");
  }
  require_ok(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  const std::size_t reserved = pool->reserved_bytes();
  BOOST_CHECK_GE(reserved, std::size_t{4} << 20);  // freed memory stays in the pool
  {
    auto b = lc::device_buffer<float>::create(*pool, 1 << 20, stream);
    BOOST_REQUIRE(b.has_value());
  }
  require_ok(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  BOOST_CHECK_EQUAL(pool->reserved_bytes(), reserved);  // served from the cache: no new memory
  require_ok(cudaStreamDestroy(stream), "cudaStreamDestroy");
#endif
}
BOOST_AUTO_TEST_SUITE_END()

// cuBLAS is loaded on first use rather than linked (kernels/cuda/cublas_api.hpp): the library must be
// found and every entry point resolved. No GPU is needed for that, so this suite runs everywhere; a
// build without CUDA says so instead.
BOOST_AUTO_TEST_SUITE(cuda_libraries)

#if LOOM_WITH_CUDA
BOOST_AUTO_TEST_CASE(cublas_loads_on_first_use) {
  auto api = lc::cublas();
  BOOST_TEST_REQUIRE(api.has_value(), (api ? "" : api.error().message));
  BOOST_TEST(((*api)->lt_matmul != nullptr && (*api)->gemm_grouped_batched_ex != nullptr &&
              (*api)->create != nullptr));
  BOOST_TEST(std::string((*api)->lt_status_name(CUBLAS_STATUS_SUCCESS)) == "CUBLAS_STATUS_SUCCESS");
  auto again = lc::cublas();  // loaded once
  BOOST_TEST_REQUIRE(again.has_value());
  BOOST_TEST(*again == *api);
}
#else
BOOST_AUTO_TEST_CASE(a_build_without_cuda_says_so) {
  auto gpus = loom::kernels::list_gpus();
  BOOST_TEST_REQUIRE(!gpus.has_value());
  BOOST_TEST(gpus.error().message.find("CUDA") != std::string::npos, gpus.error().message);
}
#endif

BOOST_AUTO_TEST_SUITE_END()
