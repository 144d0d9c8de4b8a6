// The ends of the model on the GPU, as kernels/cpu/loss.hpp: token embedding (first stage) and softmax
// cross-entropy with its gradient (last stage). Logits and dlogits are bf16, the softmax statistics fp32,
// the loss sum fp64; the embedding gradient accumulates into an fp32 table. One block per row.
#pragma once

#include "kernels/cuda/types.hpp"

namespace loom::cuda {

// out[t] = table[ids[t]]: [rows, dim] bf16.
expected<void> embedding_forward(const bf16* table, const int* ids, int rows, int dim, bf16* out,
                                 cudaStream_t stream);
// dtable[ids[t]] += dout[t] (fp32 atomics: repeated ids are summed in no fixed order).
expected<void> embedding_backward(const bf16* dout, const int* ids, int rows, int dim, float* dtable,
                                  cudaStream_t stream);

// Per row r: loss_r = logsumexp(logits[r]) - logits[r, target[r]]; dlogits = scale * (softmax - onehot).
// loss_sum (one device double) += sum of loss_r; row_loss (fp32 [rows], may be null) = loss_r.
expected<void> cross_entropy(const bf16* logits, const int* targets, int rows, int vocab, float scale,
                             bf16* dlogits, float* row_loss, double* loss_sum, cudaStream_t stream);

}  // namespace loom::cuda
