#include "kernels/cuda/model/elementwise.hpp"

#include <cuda_bf16.h>

#include <algorithm>

#include "kernels/cuda/check.hpp"

namespace loom::cuda::model {

namespace {

int blocks_for(std::size_t n, int threads) { return static_cast<int>(std::min<std::size_t>((n + threads - 1) / threads, 65535)); }

__global__ void add_kernel(bf16* y, const bf16* x, std::size_t n) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x)
    y[i] = __float2bfloat16(__bfloat162float(y[i]) + __bfloat162float(x[i]));
}

__global__ void to_bf16_kernel(const float* src, bf16* dst, std::size_t n) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x)
    dst[i] = __float2bfloat16(src[i]);
}

// The same hash and transform as the CPU model's gumbel() (kernels/model/moe_block.cpp).
__device__ float gumbel(std::uint64_t seed, std::uint64_t token, std::uint64_t expert) {
  std::uint64_t x = seed ^ (token * 0x9e3779b97f4a7c15ull) ^ (expert * 0xc2b2ae3d27d4eb4full);
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  x ^= x >> 31;
  const double u = (static_cast<double>(x >> 11) + 0.5) * (1.0 / 9007199254740992.0);
  return static_cast<float>(-log(-log(u)));
}

__global__ void skew_kernel(float* logits, int rows, int experts, float skew, std::uint64_t seed, int first_token) {
  const std::size_t n = std::size_t(rows) * experts;
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x) {
    const int t = static_cast<int>(i / experts), e = static_cast<int>(i % experts);
    logits[i] += -skew * logf(static_cast<float>(e + 1)) + gumbel(seed, static_cast<std::uint64_t>(first_token + t), e);
  }
}

__global__ void choose_kernel(const int* topk_idx, int rows, int k, const int* offsets, const int* slots, int first_token,
                              int* out) {
  const int n = rows * k;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const int e = topk_idx[i];
    const int copies = offsets[e + 1] - offsets[e];
    const long long token = first_token + i / k;
    out[i] = slots[offsets[e] + static_cast<int>(token % copies)];
  }
}

__global__ void count_kernel(const int* idx, int n, float* load) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) atomicAdd(load + idx[i], 1.f);
}

}  // namespace

expected<void> add_into(bf16* y, const bf16* x, std::size_t n, cudaStream_t stream) {
  if (n == 0) return {};
  add_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(y, x, n);
  return launched("add_into");
}

expected<void> to_bf16(const float* src, bf16* dst, std::size_t n, cudaStream_t stream) {
  if (n == 0) return {};
  to_bf16_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(src, dst, n);
  return launched("to_bf16");
}

expected<void> add_router_skew(float* logits, int rows, int experts, float skew, std::uint64_t token_seed, int first_token,
                               cudaStream_t stream) {
  if (rows == 0) return {};
  skew_kernel<<<blocks_for(std::size_t(rows) * experts, 256), 256, 0, stream>>>(logits, rows, experts, skew, token_seed,
                                                                                 first_token);
  return launched("add_router_skew");
}

expected<void> choose_slots(const int* topk_idx, int rows, int k, const int* copy_offsets, const int* copy_slots,
                            int first_token, int* slot, cudaStream_t stream) {
  if (rows == 0) return {};
  choose_kernel<<<blocks_for(std::size_t(rows) * k, 256), 256, 0, stream>>>(topk_idx, rows, k, copy_offsets, copy_slots,
                                                                             first_token, slot);
  return launched("choose_slots");
}

expected<void> count_load(const int* idx, int n, float* load, cudaStream_t stream) {
  if (n == 0) return {};
  count_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(idx, n, load);
  return launched("count_load");
}

}  // namespace loom::cuda::model
