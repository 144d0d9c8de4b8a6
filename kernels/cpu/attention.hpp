// Causal multi-head self-attention, the core without projections: out = softmax(q k^T * scale + mask) v
// per sequence and head. The projections around it are GEMMs (gemm.hpp).
//
// Layout: tokens are [seqs * seq_len] rows, sequence after sequence. Head h of token t reads
// q[t * ld_qkv + h * head_dim .. + head_dim) (k and v likewise) and writes out[t * ld_out + h * head_dim ...].
// A packed qkv buffer [tokens, 3 * hidden] is used as q = qkv, k = qkv + hidden, v = qkv + 2 * hidden.
#pragma once

namespace loom::kernels::cpu {

struct attention_shape {
  int seqs = 1;
  int seq_len = 1;
  int heads = 1;
  int head_dim = 1;
  float scale = 1.f;  // usually 1 / sqrt(head_dim)
};

// lse: [seqs * heads * seq_len] log-sum-exp of each softmax row (index (s * heads + h) * seq_len + i),
// saved for the backward pass.
void attention_forward(const attention_shape& shape, const float* q, const float* k, const float* v, int ld_qkv,
                       float* out, int ld_out, float* lse);

// Gradients for q, k and v (overwritten) from dout, using the forward's out and lse. Attention has no
// weights of its own, so this is all input-gradient work.
void attention_backward(const attention_shape& shape, const float* q, const float* k, const float* v, int ld_qkv,
                        const float* out, int ld_out, const float* dout, int ld_dout, const float* lse, float* dq,
                        float* dk, float* dv, int ld_dqkv);

}  // namespace loom::kernels::cpu
