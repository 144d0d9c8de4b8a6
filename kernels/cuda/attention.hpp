// Causal multi-head attention core on the GPU, the semantics and layout of kernels/cpu/attention.hpp:
// out = softmax(q k^T * scale + causal mask) v per (sequence, head); tokens are [seqs * seq_len] rows; head
// h of token t reads q[t * ld_qkv + h * head_dim ...] (k, v likewise: a packed qkv buffer is q = qkv,
// k = qkv + hidden, v = qkv + 2 hidden, ld_qkv = 3 hidden). bf16 in and out, fp32 softmax and accumulators.
//
// Forward: flash-style tiles (mma.sync m16n8k16 bf16 tensor cores): a CTA of 4 warps owns 128 queries of
// one (sequence, head), streams 64-key K/V tiles through double-buffered shared memory (cp.async),
// keeps an online softmax in registers and writes out and the log-sum-exp (natural log) per row.
// Backward: a CTA of 8 warps owns 128 keys and walks the query tiles at or after them, recomputing the
// probabilities from the saved log-sum-exp; dK and dV accumulate in registers, dQ in an fp32 workspace
// through vector atomics, converted (and scaled) to bf16 at the end.
//
// Implementations (attention_impl):
//   wgmma: Hopper warpgroup MMA. Forward: 2 warpgroups x 64 queries over 128-key tiles that TMA streams
//     through a 3-stage mbarrier ring; the warpgroups take turns on the tensor cores (ping-pong) and keep the
//     probabilities in registers as the A operand of P V. Backward: 2 warpgroups x 64 keys over 64-query
//     tiles; the dQ product of one tile is issued with the next tile's products (one CTA barrier a tile).
//   wgmma_basic: the same products without the pipelining (cp.async loads, two CTA barriers per tile).
//   wgmma_split: forward as wgmma; backward in two ping-pong kernels with no atomics: one owns 128 keys
//     and computes dK, dV over the query tiles after them; one owns 128 queries and recomputes S and dP
//     over the keys before them for dQ (seven products a tile pair instead of five, no fp32 dQ
//     accumulator to clear and convert).
//   mma_sync: mma.sync m16n8k16 kernels, as described above: the portable fallback.
//   automatic (default): the fastest measured kernels on an H100 (bench/gpu.sh, docs/PERFORMANCE.md):
//     forward wgmma (ping-pong), backward wgmma_split for both head dims (23% less time than
//     wgmma_basic at head_dim 128, 12% less than mma_sync at 64).
//
// head_dim 64 or 128; leading dimensions multiples of 8 and 16-byte aligned bases.
#pragma once

#include <cstddef>

#include "kernels/cuda/types.hpp"

namespace loom::cuda {

enum class attention_impl { automatic, wgmma, wgmma_basic, wgmma_split, mma_sync };
constexpr attention_impl default_attention_impl = attention_impl::automatic;

struct attention_shape {
  int seqs = 1;
  int seq_len = 1;
  int heads = 1;
  int head_dim = 64;
  float scale = 0.125f;  // usually 1 / sqrt(head_dim)
};

// lse: fp32 [seqs * heads * seq_len], index (s * heads + h) * seq_len + i.
expected<void> attention_forward(const attention_shape& shape, const bf16* q, const bf16* k, const bf16* v,
                                 int ld_qkv, bf16* out, int ld_out, float* lse, cudaStream_t stream,
                                 attention_impl impl = default_attention_impl);

// Device scratch attention_backward needs with implementation impl: the per-row dot(dout, out), and for
// every backward but wgmma_split (the default's) the fp32 dQ accumulator after it. Pass the same impl
// to attention_backward.
std::size_t attention_backward_workspace_bytes(const attention_shape& shape,
                                               attention_impl impl = default_attention_impl);

// dq, dk, dv (overwritten, bf16, row stride ld_dqkv) from dout, using the forward's out and lse.
expected<void> attention_backward(const attention_shape& shape, const bf16* q, const bf16* k, const bf16* v,
                                  int ld_qkv, const bf16* out, int ld_out, const bf16* dout, int ld_dout,
                                  const float* lse, bf16* dq, bf16* dk, bf16* dv, int ld_dqkv,
                                  void* workspace, std::size_t workspace_bytes, cudaStream_t stream,
                                  attention_impl impl = default_attention_impl);

}  // namespace loom::cuda
