// Dense matrix products on the CPU through OpenBLAS (row-major, float32).
#pragma once

namespace loom::kernels::cpu {

// C = alpha * op(A) * op(B) + beta * C, where op(A) is m x k and op(B) is k x n; row-major with
// leading dimensions lda, ldb, ldc. beta = 0 overwrites C (C may hold garbage), beta = 1 accumulates.
void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc);

// Limits OpenBLAS to `threads` threads in this process (loom's actors already run in parallel, so
// the runtime sets 1; a plain single-threaded loop can ask for more).
void set_blas_threads(int threads);

}  // namespace loom::kernels::cpu
