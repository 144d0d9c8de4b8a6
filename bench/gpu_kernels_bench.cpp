// Speed of the CUDA kernels on the two benchmarked ops (grouped expert GEMM, causal attention) and the
// dense bf16 GEMM rate of the GPU, measured with CUDA events: warm-up, then the median of many runs; the
// inputs are random bf16 (never zeros) and each operand is larger than the L2 cache.
// Prints one "bench <key> <value>" line per number (bench/gpu.sh turns them into a table) and a readable
// line next to each.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/attention.hpp"
#include "kernels/cuda/gemm.hpp"
#include "kernels/cuda/grouped_gemm.hpp"

namespace lc = loom::cuda;
using bf16 = lc::bf16;

namespace {

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "gpu_kernels_bench: %s\n", what.c_str());
  std::exit(1);
}
void ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) die(std::string(what) + ": " + cudaGetErrorString(e));
}
void ok(const loom::expected<void>& e, const char* what) {
  if (!e) die(std::string(what) + ": " + e.error().message);
}

template <class T>
T* dalloc(std::size_t n) {
  void* p = nullptr;
  ok(cudaMalloc(&p, n * sizeof(T)), "cudaMalloc");
  return static_cast<T*>(p);
}

// Random bf16 N(0, sd) over n elements: a 16M-element random block tiled over the buffer.
void fill_random(bf16* p, std::size_t n, float sd, std::uint64_t seed) {
  const std::size_t block = std::min<std::size_t>(n, std::size_t{1} << 24);
  std::vector<bf16> h(block);
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> dist(0.f, sd);
  for (auto& v : h) v = __float2bfloat16(dist(gen));
  for (std::size_t at = 0; at < n; at += block)
    ok(cudaMemcpy(p + at, h.data(), std::min(block, n - at) * sizeof(bf16), cudaMemcpyHostToDevice),
       "cudaMemcpy");
}

template <class F>
double median_ms(F&& f, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) f();
  ok(cudaDeviceSynchronize(), "warm-up");
  cudaEvent_t a, b;
  ok(cudaEventCreate(&a), "cudaEventCreate");
  ok(cudaEventCreate(&b), "cudaEventCreate");
  std::vector<float> t;
  for (int i = 0; i < reps; ++i) {
    ok(cudaEventRecord(a), "cudaEventRecord");
    f();
    ok(cudaEventRecord(b), "cudaEventRecord");
    ok(cudaEventSynchronize(b), "cudaEventSynchronize");
    float ms = 0;
    ok(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
    t.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void report(const char* key, double value, const char* unit, const std::string& text) {
  std::printf("bench %s %.6g\n", key, value);
  std::printf("  %-58s %10.3f %s\n", text.c_str(), value, unit);
  std::fflush(stdout);
}

// Uneven expert loads (a Zipf-like skew with noise), summing to `total`.
std::vector<int> expert_counts(int groups, int total, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> noise(0.7, 1.3);
  std::vector<double> w(groups);
  for (int g = 0; g < groups; ++g) w[g] = noise(gen) / std::pow(g + 1.0, 0.5);
  double sum = 0;
  for (double v : w) sum += v;
  std::vector<int> c(groups);
  int used = 0;
  for (int g = 0; g < groups; ++g) used += c[g] = static_cast<int>(w[g] / sum * total);
  c[0] += total - used;
  return c;
}

void bench_dense(lc::blas& blas) {
  const int n = 8192;
  bf16* a = dalloc<bf16>(std::size_t(n) * n);
  bf16* b = dalloc<bf16>(std::size_t(n) * n);
  bf16* c = dalloc<bf16>(std::size_t(n) * n);
  fill_random(a, std::size_t(n) * n, 1.f, 1);
  fill_random(b, std::size_t(n) * n, 1.f, 2);
  const double ms = median_ms(
      [&] { ok(blas.gemm(false, false, n, n, n, 1.f, a, n, b, n, 0.f, c, n, nullptr), "gemm"); }, 5, 30);
  report("dense_8192_tflops", 2.0 * n * n * double(n) / (ms * 1e-3) / 1e12, "TFLOP/s",
         "cublasLt bf16 GEMM 8192^3");
  cudaFree(a);
  cudaFree(b);
  cudaFree(c);
}

// One grouped-GEMM shape: the forward [W1|W3] product of `groups` experts over `rows` token copies.
void bench_grouped(lc::blas& blas, const char* name, int groups, int rows, int n, int k) {
  const auto counts = expert_counts(groups, rows, 7);
  std::vector<int> off(groups + 1, 0);
  for (int g = 0; g < groups; ++g) off[g + 1] = off[g] + counts[g];
  bf16* a = dalloc<bf16>(std::size_t(rows) * k);
  bf16* w = dalloc<bf16>(std::size_t(groups) * k * n);
  bf16* c = dalloc<bf16>(std::size_t(rows) * n);
  bf16* dy = dalloc<bf16>(std::size_t(rows) * n);
  float* dw = dalloc<float>(std::size_t(groups) * k * n);
  int* d_off = dalloc<int>(groups + 1);
  void** scratch = dalloc<void*>(3 * std::size_t(groups));
  fill_random(a, std::size_t(rows) * k, 1.f, 3);
  fill_random(w, std::size_t(groups) * k * n, 0.02f, 4);
  fill_random(dy, std::size_t(rows) * n, 1.f, 5);
  ok(cudaMemset(dw, 0, std::size_t(groups) * k * n * sizeof(float)), "cudaMemset");
  ok(cudaMemcpy(d_off, off.data(), off.size() * sizeof(int), cudaMemcpyHostToDevice), "cudaMemcpy");
  const double flops = 2.0 * rows * double(n) * k;
  auto tflops = [&](double ms) { return flops / (ms * 1e-3) / 1e12; };
  const std::string shape = std::to_string(groups) + " experts, " + std::to_string(rows) +
                            " rows, n=" + std::to_string(n) + ", k=" + std::to_string(k);
  const int warm = 3, reps = 20;
  // bench/gpu.sh sets this when the wgmma tests failed or hung: measure the rest.
  const bool skip_wgmma = std::getenv("LOOM_BENCH_SKIP_WGMMA") != nullptr;
  auto time_impl = [&](lc::grouped_impl impl) {
    return skip_wgmma ? 1e9
                      : median_ms(
                            [&] {
                              ok(lc::grouped_gemm(a, w, lc::weight_layout::kn, c, d_off, groups, rows, n, k,
                                                  nullptr, impl),
                                 "wgmma");
                            },
                            warm, reps);
  };
  const double t_wg = time_impl(lc::grouped_impl::wgmma);
  report((std::string(name) + "_wgmma_tflops").c_str(), tflops(t_wg), "TFLOP/s",
         "grouped x W, wgmma (" + shape + ")");
  const double t_ms = median_ms(
      [&] {
        ok(lc::grouped_gemm(a, w, lc::weight_layout::kn, c, d_off, groups, rows, n, k, nullptr,
                            lc::grouped_impl::mma_sync),
           "mma_sync");
      },
      warm, reps);
  report((std::string(name) + "_mma_sync_tflops").c_str(), tflops(t_ms), "TFLOP/s", "grouped x W, mma.sync");
  const double t_bi = skip_wgmma ? 1e9
                                 : median_ms(
                                       [&] {
                                         ok(lc::grouped_gemm(c, w, lc::weight_layout::nk, a, d_off, groups,
                                                             rows, k, n, nullptr, lc::grouped_impl::wgmma),
                                            "wgmma nk");
                                       },
                                       warm, reps);
  report((std::string(name) + "_wgmma_nk_tflops").c_str(), tflops(t_bi), "TFLOP/s",
         "grouped dy W^T (backward input), wgmma");
  const double t_wgrad = skip_wgmma ? 1e9
                                    : median_ms(
                                          [&] {
                                            ok(lc::grouped_gemm_wgrad(a, dy, dw, d_off, groups, rows, k, n,
                                                                      nullptr, lc::grouped_impl::wgmma),
                                               "wgrad");
                                          },
                                          warm, reps);
  report((std::string(name) + "_wgrad_tflops").c_str(), tflops(t_wgrad), "TFLOP/s",
         "grouped x^T dy (weight grad), wgmma");
  auto cub = [&] {
    ok(lc::grouped_gemm_cublas(blas, a, w, lc::weight_layout::kn, c, off.data(), groups, n, k, scratch,
                               nullptr),
       "cublas grouped");
  };
  const double t_cub = median_ms(cub, warm, reps);
  report((std::string(name) + "_cublas_grouped_tflops").c_str(), tflops(t_cub), "TFLOP/s",
         "cublasGemmGroupedBatchedEx (host sizes)");
  const double t_dense = median_ms(
      [&] { ok(blas.gemm(false, false, rows, n, k, 1.f, a, k, w, n, 0.f, c, n, nullptr), "dense"); }, warm,
      reps);
  report((std::string(name) + "_dense_tflops").c_str(), tflops(t_dense), "TFLOP/s",
         "cublasLt dense, same FLOPs (M=" + std::to_string(rows) + ")");
  cudaFree(a);
  cudaFree(w);
  cudaFree(c);
  cudaFree(dy);
  cudaFree(dw);
  cudaFree(d_off);
  cudaFree(scratch);
}

void bench_attention(const std::string& name, int batch, int seq, int heads, int hd,
                     lc::attention_impl impl) {
  const int hidden = heads * hd, T = batch * seq, ld = 3 * hidden;
  lc::attention_shape s{batch, seq, heads, hd, 1.f / std::sqrt(static_cast<float>(hd))};
  bf16* qkv = dalloc<bf16>(std::size_t(T) * ld);
  bf16* out = dalloc<bf16>(std::size_t(T) * hidden);
  bf16* dout = dalloc<bf16>(std::size_t(T) * hidden);
  bf16* dqkv = dalloc<bf16>(std::size_t(T) * ld);
  float* lse = dalloc<float>(std::size_t(T) * heads);
  const std::size_t ws = lc::attention_backward_workspace_bytes(s, impl);
  void* work = dalloc<unsigned char>(ws);
  fill_random(qkv, std::size_t(T) * ld, 1.f, 11);
  fill_random(dout, std::size_t(T) * hidden, 1.f, 12);
  auto fwd = [&] {
    ok(lc::attention_forward(s, qkv, qkv + hidden, qkv + 2 * hidden, ld, out, hidden, lse, nullptr, impl),
       "attention_forward");
  };
  auto bwd = [&] {
    ok(lc::attention_backward(s, qkv, qkv + hidden, qkv + 2 * hidden, ld, out, hidden, dout, hidden, lse,
                              dqkv, dqkv + hidden, dqkv + 2 * hidden, ld, work, ws, nullptr, impl),
       "attention_backward");
  };
  fwd();
  const double flops_fwd = 4.0 * batch * heads * double(seq) * seq * hd / 2;  // causal half
  const double t_f = median_ms(fwd, 3, 20);
  const double t_b = median_ms(bwd, 3, 20);
  const double t_fb = median_ms(
      [&] {
        fwd();
        bwd();
      },
      3, 20);
  const std::string shape = std::to_string(batch) + "x" + std::to_string(seq) + "x" + std::to_string(heads) +
                            "x" + std::to_string(hd) +
                            (impl == lc::attention_impl::automatic     ? " (default)"
                             : impl == lc::attention_impl::wgmma       ? " (wgmma)"
                             : impl == lc::attention_impl::wgmma_basic ? " (wgmma, basic)"
                             : impl == lc::attention_impl::wgmma_split ? " (wgmma, split backward)"
                                                                       : " (mma.sync)");
  report((name + "_fwd_ms").c_str(), t_f, "ms", "attention forward " + shape);
  report((name + "_fwd_tflops").c_str(), flops_fwd / (t_f * 1e-3) / 1e12, "TFLOP/s", "  forward rate");
  report((name + "_bwd_ms").c_str(), t_b, "ms", "attention backward");
  report((name + "_bwd_tflops").c_str(), 2.5 * flops_fwd / (t_b * 1e-3) / 1e12, "TFLOP/s", "  backward rate");
  report((name + "_fwdbwd_ms").c_str(), t_fb, "ms", "attention forward + backward");
  cudaFree(qkv);
  cudaFree(out);
  cudaFree(dout);
  cudaFree(dqkv);
  cudaFree(lse);
  cudaFree(work);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string only = argc > 1 ? argv[1] : "";
  cudaDeviceProp prop{};
  ok(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  std::printf("device: %s, %d SMs, %.0f MB L2\n", prop.name, prop.multiProcessorCount,
              prop.l2CacheSize / 1e6);
  auto blas = lc::blas::create();
  if (!blas) die(blas.error().message);
  if (only.empty() || only == "dense") bench_dense(**blas);
  if (only.empty() || only == "grouped") {
    bench_grouped(**blas, "gg_v3", 8, 32768, 4096, 7168);  // DeepSeek-V3-like: hidden 7168, [W1|W3] 2 x 2048
    bench_grouped(**blas, "gg_small", 32, 16384, 2816, 2048);  // many small experts
  }
  if (only.empty() || only == "attention") {
    for (int hd : {128, 64}) {
      const std::string n = "attn" + std::to_string(hd);
      const int heads = 2048 / hd;
      bench_attention(n, 4, 4096, heads, hd, lc::attention_impl::automatic);  // the default
      bench_attention(n + "_wgmma", 4, 4096, heads, hd, lc::attention_impl::wgmma);
      bench_attention(n + "_basic", 4, 4096, heads, hd, lc::attention_impl::wgmma_basic);
      bench_attention(n + "_split", 4, 4096, heads, hd, lc::attention_impl::wgmma_split);
      bench_attention(n + "_mma", 4, 4096, heads, hd, lc::attention_impl::mma_sync);
    }
  }
  return 0;
}
