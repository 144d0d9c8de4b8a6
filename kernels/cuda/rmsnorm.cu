#include <cstdint>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/rmsnorm.hpp"

namespace loom::cuda {

namespace {

using namespace dev;

// VEC = 8: 16-byte loads (dim % 8 == 0 and aligned rows); VEC = 1: scalar.
template <int VEC>
__device__ __forceinline__ void load_vec(const bf16* p, float (&v)[VEC]) {
  if constexpr (VEC == 8) {
    unpack8(*reinterpret_cast<const bf16x8*>(p), v);
  } else {
    v[0] = __bfloat162float(*p);
  }
}

template <int VEC>
__device__ __forceinline__ void store_vec(bf16* p, const float (&v)[VEC]) {
  if constexpr (VEC == 8) {
    *reinterpret_cast<bf16x8*>(p) = pack8(v);
  } else {
    *p = __float2bfloat16(v[0]);
  }
}

template <int VEC>
__global__ void rmsnorm_forward_kernel(const bf16* __restrict__ x, const bf16* __restrict__ gamma,
                                       bf16* __restrict__ y, float* __restrict__ inv_rms, int dim,
                                       float eps) {
  __shared__ float scratch[32];
  const std::size_t base = static_cast<std::size_t>(blockIdx.x) * dim;
  float ss = 0.f;
  for (int c = threadIdx.x * VEC; c < dim; c += blockDim.x * VEC) {
    float v[VEC];
    load_vec<VEC>(x + base + c, v);
#pragma unroll
    for (int i = 0; i < VEC; ++i) ss += v[i] * v[i];
  }
  ss = block_sum(ss, scratch);
  const float inv = 1.f / sqrtf(ss / static_cast<float>(dim) + eps);
  if (threadIdx.x == 0) inv_rms[blockIdx.x] = inv;
  for (int c = threadIdx.x * VEC; c < dim; c += blockDim.x * VEC) {
    float v[VEC], g[VEC];
    load_vec<VEC>(x + base + c, v);
    load_vec<VEC>(gamma + c, g);
#pragma unroll
    for (int i = 0; i < VEC; ++i) v[i] = v[i] * inv * g[i];
    store_vec<VEC>(y + base + c, v);
  }
}

// dx_j = r g_j dy_j - x_j r^3 / dim * sum_i dy_i g_i x_i
template <int VEC>
__global__ void rmsnorm_backward_input_kernel(const bf16* __restrict__ dy, const bf16* __restrict__ x,
                                              const bf16* __restrict__ gamma,
                                              const float* __restrict__ inv_rms, bf16* __restrict__ dx,
                                              int dim, bool accumulate) {
  __shared__ float scratch[32];
  const std::size_t base = static_cast<std::size_t>(blockIdx.x) * dim;
  float dot = 0.f;
  for (int c = threadIdx.x * VEC; c < dim; c += blockDim.x * VEC) {
    float d[VEC], v[VEC], g[VEC];
    load_vec<VEC>(dy + base + c, d);
    load_vec<VEC>(x + base + c, v);
    load_vec<VEC>(gamma + c, g);
#pragma unroll
    for (int i = 0; i < VEC; ++i) dot += d[i] * g[i] * v[i];
  }
  dot = block_sum(dot, scratch);
  const float inv = inv_rms[blockIdx.x];
  const float coef = dot * inv * inv * inv / static_cast<float>(dim);
  for (int c = threadIdx.x * VEC; c < dim; c += blockDim.x * VEC) {
    float d[VEC], v[VEC], g[VEC], o[VEC];
    load_vec<VEC>(dy + base + c, d);
    load_vec<VEC>(x + base + c, v);
    load_vec<VEC>(gamma + c, g);
    if (accumulate) {
      load_vec<VEC>(dx + base + c, o);
    } else {
#pragma unroll
      for (int i = 0; i < VEC; ++i) o[i] = 0.f;
    }
#pragma unroll
    for (int i = 0; i < VEC; ++i) o[i] += inv * g[i] * d[i] - v[i] * coef;
    store_vec<VEC>(dx + base + c, o);
  }
}

constexpr int wcols = 64;   // columns per block (two per lane)
constexpr int wrows = 256;  // rows per block

__global__ void rmsnorm_backward_weight_kernel(const bf16* __restrict__ dy, const bf16* __restrict__ x,
                                               const float* __restrict__ inv_rms, float* __restrict__ dgamma,
                                               int rows, int dim) {
  __shared__ float part[8][wcols];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int c0 = blockIdx.x * wcols + lane, c1 = c0 + 32;
  const int r_begin = blockIdx.y * wrows, r_end = min(rows, r_begin + wrows);
  float a0 = 0.f, a1 = 0.f;
  for (int r = r_begin + warp; r < r_end; r += 8) {
    const std::size_t base = static_cast<std::size_t>(r) * dim;
    const float inv = inv_rms[r];
    if (c0 < dim) a0 += __bfloat162float(dy[base + c0]) * __bfloat162float(x[base + c0]) * inv;
    if (c1 < dim) a1 += __bfloat162float(dy[base + c1]) * __bfloat162float(x[base + c1]) * inv;
  }
  part[warp][lane] = a0;
  part[warp][lane + 32] = a1;
  __syncthreads();
  if (warp == 0) {
    float s0 = 0.f, s1 = 0.f;
#pragma unroll
    for (int w = 0; w < 8; ++w) {
      s0 += part[w][lane];
      s1 += part[w][lane + 32];
    }
    if (c0 < dim) atomicAdd(dgamma + c0, s0);
    if (c1 < dim) atomicAdd(dgamma + c1, s1);
  }
}

bool vec8(int dim, const void* a, const void* b, const void* c) {
  auto aligned = [](const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; };
  return dim % 8 == 0 && aligned(a) && aligned(b) && aligned(c);
}

int threads_for(int dim, int vec) {
  int per = (dim + vec - 1) / vec;
  int t = 32;
  while (t < per && t < 512) t *= 2;
  return t;
}

}  // namespace

expected<void> rmsnorm_forward(const bf16* x, const bf16* gamma, bf16* y, float* inv_rms, int rows, int dim,
                               float eps, cudaStream_t stream) {
  if (rows < 0 || dim <= 0) return invalid("rmsnorm_forward: bad shape");
  if (rows == 0) return {};
  if (vec8(dim, x, gamma, y)) {
    rmsnorm_forward_kernel<8><<<rows, threads_for(dim, 8), 0, stream>>>(x, gamma, y, inv_rms, dim, eps);
  } else {
    rmsnorm_forward_kernel<1><<<rows, threads_for(dim, 1), 0, stream>>>(x, gamma, y, inv_rms, dim, eps);
  }
  return launched("rmsnorm_forward_kernel");
}

expected<void> rmsnorm_backward_input(const bf16* dy, const bf16* x, const bf16* gamma, const float* inv_rms,
                                      bf16* dx, int rows, int dim, bool accumulate, cudaStream_t stream) {
  if (rows < 0 || dim <= 0) return invalid("rmsnorm_backward_input: bad shape");
  if (rows == 0) return {};
  if (vec8(dim, dy, x, dx) && vec8(dim, gamma, gamma, gamma)) {
    rmsnorm_backward_input_kernel<8>
        <<<rows, threads_for(dim, 8), 0, stream>>>(dy, x, gamma, inv_rms, dx, dim, accumulate);
  } else {
    rmsnorm_backward_input_kernel<1>
        <<<rows, threads_for(dim, 1), 0, stream>>>(dy, x, gamma, inv_rms, dx, dim, accumulate);
  }
  return launched("rmsnorm_backward_input_kernel");
}

expected<void> rmsnorm_backward_weight(const bf16* dy, const bf16* x, const float* inv_rms, float* dgamma,
                                       int rows, int dim, cudaStream_t stream) {
  if (rows < 0 || dim <= 0) return invalid("rmsnorm_backward_weight: bad shape");
  if (rows == 0) return {};
  const dim3 grid((dim + wcols - 1) / wcols, (rows + wrows - 1) / wrows);
  rmsnorm_backward_weight_kernel<<<grid, 256, 0, stream>>>(dy, x, inv_rms, dgamma, rows, dim);
  return launched("rmsnorm_backward_weight_kernel");
}

}  // namespace loom::cuda
