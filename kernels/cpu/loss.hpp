// Token embedding at the first stage and the language-model loss at the last.
#pragma once

namespace loom::kernels::cpu {

// out[t] = table[ids[t]]: [rows, dim].
void embedding_forward(const float* table, const int* ids, int rows, int dim, float* out);
// dtable[ids[t]] += dout[t].
void embedding_backward(const float* dout, const int* ids, int rows, int dim, float* dtable);

// Softmax cross-entropy of logits [rows, vocab] against targets [rows]. Returns the sum of the
// per-row losses (in double, so sums over microbatches do not depend on their order within rounding),
// and writes dlogits = scale * (softmax(logits) - onehot(target)) (overwritten).
double cross_entropy(const float* logits, const int* targets, int rows, int vocab, float scale, float* dlogits);

}  // namespace loom::kernels::cpu
