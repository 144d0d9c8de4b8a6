// Dense matrix products on the CPU through OpenBLAS (row-major, float32).
#pragma once

namespace loom::kernels::cpu {

// C = alpha * op(A) * op(B) + beta * C, where op(A) is m x k and op(B) is k x n; row-major with
// leading dimensions lda, ldb, ldc. beta = 0 overwrites C (C may hold garbage), beta = 1 accumulates.
void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc);

// c[m, n] += sum over rows r of a[r, 0:m]^T b[r, 0:n], accumulated in double. Each product of two floats
// is exact in double, so the result does not depend (to double rounding) on how the rows are split
// between calls: expert weight gradients come out the same whichever copy of an expert saw a token.
void outer_accumulate_f64(int rows, int m, int n, const float* a, int lda, const float* b, int ldb, double* c);

// Limits OpenBLAS to `threads` threads in this process (loom's actors already run in parallel, so
// the runtime sets 1; a plain single-threaded loop can ask for more).
void set_blas_threads(int threads);

}  // namespace loom::kernels::cpu
