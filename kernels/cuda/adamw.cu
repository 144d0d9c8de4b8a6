#include <cmath>
#include <cstdint>

#include "kernels/cuda/adamw.hpp"
#include "kernels/cuda/common.cuh"

namespace loom::cuda {

namespace {

struct adamw_args {
  float lr, beta1, beta2, eps, decay, c1, c2;
};

__device__ __forceinline__ float adamw_one(float& p, float g, float& m, float& v, const adamw_args& a) {
  m = a.beta1 * m + (1.f - a.beta1) * g;
  v = a.beta2 * v + (1.f - a.beta2) * g * g;
  const float update = (m * a.c1) / (sqrtf(v * a.c2) + a.eps);
  p = p * a.decay - a.lr * update;
  return p;
}

// Four elements per thread when everything is 16-byte aligned (n4 = n / 4 groups), then a scalar tail.
__global__ void adamw_kernel(float* __restrict__ param, const float* __restrict__ grad, float* __restrict__ m,
                             float* __restrict__ v, bf16* __restrict__ out, std::size_t n, bool vec,
                             adamw_args a) {
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  std::size_t first = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  std::size_t done = 0;
  if (vec) {
    const std::size_t n4 = n / 4;
    for (std::size_t i = first; i < n4; i += stride) {
      float4 p = reinterpret_cast<float4*>(param)[i];
      const float4 g = reinterpret_cast<const float4*>(grad)[i];
      float4 mm = reinterpret_cast<float4*>(m)[i];
      float4 vv = reinterpret_cast<float4*>(v)[i];
      adamw_one(p.x, g.x, mm.x, vv.x, a);
      adamw_one(p.y, g.y, mm.y, vv.y, a);
      adamw_one(p.z, g.z, mm.z, vv.z, a);
      adamw_one(p.w, g.w, mm.w, vv.w, a);
      reinterpret_cast<float4*>(param)[i] = p;
      reinterpret_cast<float4*>(m)[i] = mm;
      reinterpret_cast<float4*>(v)[i] = vv;
      if (out != nullptr) {
        uint2 b;
        b.x = dev::pack_bf16(p.x, p.y);
        b.y = dev::pack_bf16(p.z, p.w);
        reinterpret_cast<uint2*>(out)[i] = b;
      }
    }
    done = n4 * 4;
  }
  for (std::size_t i = done + first; i < n; i += stride) {
    float p = param[i], mm = m[i], vv = v[i];
    adamw_one(p, grad[i], mm, vv, a);
    param[i] = p;
    m[i] = mm;
    v[i] = vv;
    if (out != nullptr) out[i] = __float2bfloat16(p);
  }
}

}  // namespace

expected<void> adamw_step(float* param, const float* grad, float* m, float* v, bf16* param_bf16,
                          std::size_t n, const adamw_config& cfg, int step, cudaStream_t stream) {
  if (step < 1) return invalid("adamw_step: step counts from 1");
  if (n == 0) return {};
  adamw_args a{};
  a.lr = cfg.lr;
  a.beta1 = cfg.beta1;
  a.beta2 = cfg.beta2;
  a.eps = cfg.eps;
  a.decay = 1.f - cfg.lr * cfg.weight_decay;
  a.c1 = static_cast<float>(1.0 / (1.0 - std::pow(static_cast<double>(cfg.beta1), step)));
  a.c2 = static_cast<float>(1.0 / (1.0 - std::pow(static_cast<double>(cfg.beta2), step)));
  auto aligned = [](const void* p, unsigned mask) {
    return (reinterpret_cast<std::uintptr_t>(p) & mask) == 0;
  };
  const bool vec = aligned(param, 15) && aligned(grad, 15) && aligned(m, 15) && aligned(v, 15) &&
                   (param_bf16 == nullptr || aligned(param_bf16, 7));
  const std::size_t items = vec ? (n + 3) / 4 : n;
  std::size_t blocks = (items + 255) / 256;
  if (blocks > 4096) blocks = 4096;
  adamw_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(param, grad, m, v, param_bf16, n, vec, a);
  return launched("adamw_kernel");
}

}  // namespace loom::cuda
