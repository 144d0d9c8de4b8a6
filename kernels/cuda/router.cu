#include "kernels/cuda/common.cuh"
#include "kernels/cuda/router.hpp"

namespace loom::cuda {

namespace {

using namespace dev;

constexpr int router_warps = 4;  // rows per block

__device__ __forceinline__ float sigmoid(float x) {
  if (x >= 0.f) return 1.f / (1.f + expf(-x));
  const float e = expf(x);
  return e / (1.f + e);
}

// Is (ka, ea) chosen before (kb, eb)? Larger key first, then the lower expert index.
__device__ __forceinline__ bool better(float ka, int ea, float kb, int eb) {
  return ka > kb || (ka == kb && ea < eb);
}

// NPL scores per lane: expert e = lane + 32 j lives in lane's slot j.
template <int NPL>
__global__ void router_forward_kernel(bool softmax, const float* __restrict__ logits,
                                      const float* __restrict__ bias, int rows, int experts, int k,
                                      int* __restrict__ topk_idx, float* __restrict__ topk_weight,
                                      float* __restrict__ scores) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * router_warps + (threadIdx.x >> 5);
  if (row >= rows) return;
  const std::size_t base = static_cast<std::size_t>(row) * experts;
  float s[NPL], key[NPL];
#pragma unroll
  for (int j = 0; j < NPL; ++j) {
    const int e = lane + 32 * j;
    s[j] = e < experts ? logits[base + e] : -INFINITY;
  }
  if (softmax) {
    float mx = -INFINITY;
#pragma unroll
    for (int j = 0; j < NPL; ++j) mx = fmaxf(mx, s[j]);
    mx = warp_max(mx);
    double sum = 0;
#pragma unroll
    for (int j = 0; j < NPL; ++j) {
      s[j] = (lane + 32 * j) < experts ? expf(s[j] - mx) : 0.f;
      sum += s[j];
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    const float inv = static_cast<float>(1.0 / sum);
#pragma unroll
    for (int j = 0; j < NPL; ++j) {
      s[j] *= inv;
      key[j] = (lane + 32 * j) < experts ? s[j] : -INFINITY;
    }
  } else {
#pragma unroll
    for (int j = 0; j < NPL; ++j) {
      const int e = lane + 32 * j;
      if (e < experts) {
        s[j] = sigmoid(s[j]);
        key[j] = bias != nullptr ? s[j] + bias[e] : s[j];
      } else {
        s[j] = 0.f;
        key[j] = -INFINITY;
      }
    }
  }
#pragma unroll
  for (int j = 0; j < NPL; ++j) {
    const int e = lane + 32 * j;
    if (e < experts) scores[base + e] = s[j];
  }
  // k rounds of a warp arg-max over the experts not taken yet.
  unsigned taken = 0;
  double chosen_sum = 0;
  const std::size_t out = static_cast<std::size_t>(row) * k;
  for (int r = 0; r < k; ++r) {
    float bk = -INFINITY, bs = 0.f;
    int be = 0x7fffffff;
#pragma unroll
    for (int j = 0; j < NPL; ++j) {
      const int e = lane + 32 * j;
      if (e < experts && !(taken & (1u << j)) && better(key[j], e, bk, be)) {
        bk = key[j];
        be = e;
        bs = s[j];
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ok = __shfl_xor_sync(0xffffffffu, bk, o);
      const int oe = __shfl_xor_sync(0xffffffffu, be, o);
      const float os = __shfl_xor_sync(0xffffffffu, bs, o);
      if (better(ok, oe, bk, be)) {
        bk = ok;
        be = oe;
        bs = os;
      }
    }
    if ((be & 31) == lane) taken |= 1u << (be >> 5);
    chosen_sum += bs;
    if (lane == 0) {
      topk_idx[out + r] = be;
      topk_weight[out + r] = bs;
    }
  }
  if (!softmax && lane == 0) {
    for (int r = 0; r < k; ++r) topk_weight[out + r] = static_cast<float>(topk_weight[out + r] / chosen_sum);
  }
}

__global__ void router_backward_kernel(bool softmax, const float* __restrict__ scores,
                                       const int* __restrict__ topk_idx,
                                       const float* __restrict__ topk_weight,
                                       const float* __restrict__ d_topk_weight, int rows, int experts, int k,
                                       float* __restrict__ dlogits) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * router_warps + (threadIdx.x >> 5);
  if (row >= rows) return;
  const std::size_t base = static_cast<std::size_t>(row) * experts, tk = static_cast<std::size_t>(row) * k;
  // dot = sum_j dw_j p_{c_j} (softmax) or sum_j dw_j w_j (sigmoid); sum = sum_j s_{c_j} (sigmoid).
  double dot = 0, sum = 0;
  for (int j = lane; j < k; j += 32) {
    const float dw = d_topk_weight[tk + j];
    const float sc = scores[base + topk_idx[tk + j]];
    dot += static_cast<double>(dw) * (softmax ? sc : topk_weight[tk + j]);
    sum += sc;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    dot += __shfl_xor_sync(0xffffffffu, dot, o);
    sum += __shfl_xor_sync(0xffffffffu, sum, o);
  }
  for (int e = lane; e < experts; e += 32) {
    float g = 0.f;  // sum of dw_j over the slots that chose e (at most one)
    bool chosen = false;
    for (int j = 0; j < k; ++j)
      if (topk_idx[tk + j] == e) {
        g += d_topk_weight[tk + j];
        chosen = true;
      }
    const float sc = scores[base + e];
    float d;
    if (softmax) {
      d = sc * (g - static_cast<float>(dot));
    } else {
      d = chosen ? static_cast<float>((g - dot) / sum) * sc * (1.f - sc) : 0.f;
    }
    dlogits[base + e] = d;
  }
}

__global__ void router_update_bias_kernel(float* bias, const float* load, int experts, float rate) {
  __shared__ float scratch[32];
  float s = 0.f;
  for (int e = threadIdx.x; e < experts; e += blockDim.x) s += load[e];
  const float mean = block_sum(s, scratch) / static_cast<float>(experts);
  for (int e = threadIdx.x; e < experts; e += blockDim.x) {
    const float diff = mean - load[e];
    bias[e] += rate * (diff > 0.f ? 1.f : (diff < 0.f ? -1.f : 0.f));
  }
}

}  // namespace

expected<void> router_forward(gating g, const float* logits, const float* bias, int rows, int experts, int k,
                              int* topk_idx, float* topk_weight, float* scores, cudaStream_t stream) {
  if (rows < 0 || experts <= 0 || experts > 1024 || k <= 0 || k > experts)
    return invalid("router_forward: need 0 < k <= experts <= 1024");
  if (rows == 0) return {};
  const bool softmax = g == gating::softmax;
  const dim3 grid((rows + router_warps - 1) / router_warps), block(32 * router_warps);
  const int npl = (experts + 31) / 32;
  if (npl <= 1) {
    router_forward_kernel<1>
        <<<grid, block, 0, stream>>>(softmax, logits, bias, rows, experts, k, topk_idx, topk_weight, scores);
  } else if (npl <= 2) {
    router_forward_kernel<2>
        <<<grid, block, 0, stream>>>(softmax, logits, bias, rows, experts, k, topk_idx, topk_weight, scores);
  } else if (npl <= 4) {
    router_forward_kernel<4>
        <<<grid, block, 0, stream>>>(softmax, logits, bias, rows, experts, k, topk_idx, topk_weight, scores);
  } else if (npl <= 8) {
    router_forward_kernel<8>
        <<<grid, block, 0, stream>>>(softmax, logits, bias, rows, experts, k, topk_idx, topk_weight, scores);
  } else if (npl <= 16) {
    router_forward_kernel<16>
        <<<grid, block, 0, stream>>>(softmax, logits, bias, rows, experts, k, topk_idx, topk_weight, scores);
  } else {
    router_forward_kernel<32>
        <<<grid, block, 0, stream>>>(softmax, logits, bias, rows, experts, k, topk_idx, topk_weight, scores);
  }
  return launched("router_forward_kernel");
}

expected<void> router_backward(gating g, const float* scores, const int* topk_idx, const float* topk_weight,
                               const float* d_topk_weight, int rows, int experts, int k, float* dlogits,
                               cudaStream_t stream) {
  if (rows < 0 || experts <= 0 || k <= 0 || k > experts)
    return invalid("router_backward: need 0 < k <= experts");
  if (rows == 0) return {};
  const dim3 grid((rows + router_warps - 1) / router_warps), block(32 * router_warps);
  router_backward_kernel<<<grid, block, 0, stream>>>(g == gating::softmax, scores, topk_idx, topk_weight,
                                                     d_topk_weight, rows, experts, k, dlogits);
  return launched("router_backward_kernel");
}

expected<void> router_update_bias(float* bias, const float* load, int experts, float rate,
                                  cudaStream_t stream) {
  if (experts <= 0) return {};
  router_update_bias_kernel<<<1, 256, 0, stream>>>(bias, load, experts, rate);
  return launched("router_update_bias_kernel");
}

}  // namespace loom::cuda
