#include <cstdint>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/swiglu.hpp"

namespace loom::cuda {

namespace {

using namespace dev;

__device__ __forceinline__ float sigmoid(float x) {
  if (x >= 0.f) return 1.f / (1.f + expf(-x));
  const float e = expf(x);
  return e / (1.f + e);
}

// VEC elements per thread (8: 16-byte accesses); the grid covers rows * (ffn / VEC) items.
template <int VEC>
__global__ void swiglu_forward_kernel(const bf16* __restrict__ h1, const bf16* __restrict__ h3, int ld_h,
                                      bf16* __restrict__ act, int ld_act, int rows, int ffn) {
  const int per_row = ffn / VEC;
  const std::int64_t items = static_cast<std::int64_t>(rows) * per_row;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < items;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / per_row;
    const int c = static_cast<int>(i % per_row) * VEC;
    const std::int64_t ih = r * ld_h + c, ia = r * ld_act + c;
    if constexpr (VEC == 8) {
      float a[8], b[8], o[8];
      unpack8(*reinterpret_cast<const bf16x8*>(h1 + ih), a);
      unpack8(*reinterpret_cast<const bf16x8*>(h3 + ih), b);
#pragma unroll
      for (int j = 0; j < 8; ++j) o[j] = a[j] * sigmoid(a[j]) * b[j];
      *reinterpret_cast<bf16x8*>(act + ia) = pack8(o);
    } else {
      const float a = __bfloat162float(h1[ih]), b = __bfloat162float(h3[ih]);
      act[ia] = __float2bfloat16(a * sigmoid(a) * b);
    }
  }
}

template <int VEC>
__global__ void swiglu_backward_kernel(const bf16* dact, int ld_dact, const bf16* __restrict__ h1,
                                       const bf16* __restrict__ h3, int ld_h, bf16* dh1,
                                       bf16* __restrict__ dh3, int ld_dh, int rows, int ffn) {
  const int per_row = ffn / VEC;
  const std::int64_t items = static_cast<std::int64_t>(rows) * per_row;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < items;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / per_row;
    const int c = static_cast<int>(i % per_row) * VEC;
    const std::int64_t id = r * ld_dact + c, ih = r * ld_h + c, io = r * ld_dh + c;
    if constexpr (VEC == 8) {
      float da[8], a[8], b[8], o1[8], o3[8];
      unpack8(*reinterpret_cast<const bf16x8*>(dact + id), da);
      unpack8(*reinterpret_cast<const bf16x8*>(h1 + ih), a);
      unpack8(*reinterpret_cast<const bf16x8*>(h3 + ih), b);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const float s = sigmoid(a[j]);
        o3[j] = da[j] * a[j] * s;
        o1[j] = da[j] * b[j] * s * (1.f + a[j] * (1.f - s));
      }
      *reinterpret_cast<bf16x8*>(dh1 + io) = pack8(o1);
      *reinterpret_cast<bf16x8*>(dh3 + io) = pack8(o3);
    } else {
      const float da = __bfloat162float(dact[id]), a = __bfloat162float(h1[ih]), b = __bfloat162float(h3[ih]);
      const float s = sigmoid(a);
      dh3[io] = __float2bfloat16(da * a * s);
      dh1[io] = __float2bfloat16(da * b * s * (1.f + a * (1.f - s)));
    }
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }

int blocks_for(std::int64_t items) {
  const std::int64_t b = (items + 255) / 256;
  return static_cast<int>(b < 65536 ? (b > 0 ? b : 1) : 65536);
}

}  // namespace

expected<void> swiglu_forward(const bf16* h1, const bf16* h3, int ld_h, bf16* act, int ld_act, int rows,
                              int ffn, cudaStream_t stream) {
  if (rows < 0 || ffn < 0 || ld_h < ffn || ld_act < ffn)
    return invalid("swiglu_forward: bad shape or stride");
  if (rows == 0 || ffn == 0) return {};
  if (ffn % 8 == 0 && ld_h % 8 == 0 && ld_act % 8 == 0 && aligned16(h1) && aligned16(h3) && aligned16(act)) {
    swiglu_forward_kernel<8><<<blocks_for(static_cast<std::int64_t>(rows) * (ffn / 8)), 256, 0, stream>>>(
        h1, h3, ld_h, act, ld_act, rows, ffn);
  } else {
    swiglu_forward_kernel<1><<<blocks_for(static_cast<std::int64_t>(rows) * ffn), 256, 0, stream>>>(
        h1, h3, ld_h, act, ld_act, rows, ffn);
  }
  return launched("swiglu_forward_kernel");
}

expected<void> swiglu_backward(const bf16* dact, int ld_dact, const bf16* h1, const bf16* h3, int ld_h,
                               bf16* dh1, bf16* dh3, int ld_dh, int rows, int ffn, cudaStream_t stream) {
  if (rows < 0 || ffn < 0 || ld_h < ffn || ld_dh < ffn || ld_dact < ffn)
    return invalid("swiglu_backward: bad shape or stride");
  if (rows == 0 || ffn == 0) return {};
  if (ffn % 8 == 0 && ld_h % 8 == 0 && ld_dh % 8 == 0 && ld_dact % 8 == 0 && aligned16(dact) &&
      aligned16(h1) && aligned16(h3) && aligned16(dh1) && aligned16(dh3)) {
    swiglu_backward_kernel<8><<<blocks_for(static_cast<std::int64_t>(rows) * (ffn / 8)), 256, 0, stream>>>(
        dact, ld_dact, h1, h3, ld_h, dh1, dh3, ld_dh, rows, ffn);
  } else {
    swiglu_backward_kernel<1><<<blocks_for(static_cast<std::int64_t>(rows) * ffn), 256, 0, stream>>>(
        dact, ld_dact, h1, h3, ld_h, dh1, dh3, ld_dh, rows, ffn);
  }
  return launched("swiglu_backward_kernel");
}

}  // namespace loom::cuda
