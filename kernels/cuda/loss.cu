#include <cstdint>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/loss.hpp"

namespace loom::cuda {

namespace {

using namespace dev;

__global__ void embedding_forward_kernel(const bf16* __restrict__ table, const int* __restrict__ ids, int dim,
                                         bf16* __restrict__ out) {
  const std::size_t src = static_cast<std::size_t>(ids[blockIdx.x]) * dim;
  const std::size_t dst = static_cast<std::size_t>(blockIdx.x) * dim;
  for (int c = threadIdx.x; c < dim; c += blockDim.x) out[dst + c] = table[src + c];
}

__global__ void embedding_backward_kernel(const bf16* __restrict__ dout, const int* __restrict__ ids, int dim,
                                          float* __restrict__ dtable) {
  const std::size_t dst = static_cast<std::size_t>(ids[blockIdx.x]) * dim;
  const std::size_t src = static_cast<std::size_t>(blockIdx.x) * dim;
  for (int c = threadIdx.x; c < dim; c += blockDim.x)
    atomicAdd(dtable + dst + c, __bfloat162float(dout[src + c]));
}

// Pass 1: each thread keeps a running (max, sum of exp) over its columns; the block merges them. Pass 2
// writes the gradient.
__global__ void cross_entropy_kernel(const bf16* __restrict__ logits, const int* __restrict__ targets,
                                     int vocab, float scale, bf16* __restrict__ dlogits,
                                     float* __restrict__ row_loss, double* __restrict__ loss_sum) {
  __shared__ float scratch[32];
  const std::size_t base = static_cast<std::size_t>(blockIdx.x) * vocab;
  float m = -INFINITY, s = 0.f;
  for (int c = threadIdx.x; c < vocab; c += blockDim.x) {
    const float v = __bfloat162float(logits[base + c]);
    if (v > m) {
      s = s * expf(m - v) + 1.f;
      m = v;
    } else {
      s += expf(v - m);
    }
  }
  const float mx = block_max(m, scratch);
  const float sum = block_sum(m == -INFINITY ? 0.f : s * expf(m - mx), scratch);
  const int target = targets[blockIdx.x];
  const float inv = scale / sum;
  for (int c = threadIdx.x; c < vocab; c += blockDim.x) {
    const float v = __bfloat162float(logits[base + c]);
    float g = expf(v - mx) * inv;
    if (c == target) g -= scale;
    dlogits[base + c] = __float2bfloat16(g);
  }
  if (threadIdx.x == 0) {
    const float loss = logf(sum) + mx - __bfloat162float(logits[base + target]);
    if (row_loss != nullptr) row_loss[blockIdx.x] = loss;
    atomicAdd(loss_sum, static_cast<double>(loss));
  }
}

}  // namespace

expected<void> embedding_forward(const bf16* table, const int* ids, int rows, int dim, bf16* out,
                                 cudaStream_t stream) {
  if (rows < 0 || dim <= 0) return invalid("embedding_forward: bad shape");
  if (rows == 0) return {};
  embedding_forward_kernel<<<rows, 128, 0, stream>>>(table, ids, dim, out);
  return launched("embedding_forward_kernel");
}

expected<void> embedding_backward(const bf16* dout, const int* ids, int rows, int dim, float* dtable,
                                  cudaStream_t stream) {
  if (rows < 0 || dim <= 0) return invalid("embedding_backward: bad shape");
  if (rows == 0) return {};
  embedding_backward_kernel<<<rows, 128, 0, stream>>>(dout, ids, dim, dtable);
  return launched("embedding_backward_kernel");
}

expected<void> cross_entropy(const bf16* logits, const int* targets, int rows, int vocab, float scale,
                             bf16* dlogits, float* row_loss, double* loss_sum, cudaStream_t stream) {
  if (rows < 0 || vocab <= 0) return invalid("cross_entropy: bad shape");
  if (loss_sum == nullptr) return invalid("cross_entropy: loss_sum must point to a device double");
  if (rows == 0) return {};
  cross_entropy_kernel<<<rows, 256, 0, stream>>>(logits, targets, vocab, scale, dlogits, row_loss, loss_sum);
  return launched("cross_entropy_kernel");
}

}  // namespace loom::cuda
