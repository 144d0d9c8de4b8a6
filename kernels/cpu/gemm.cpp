// Dense matrix products through OpenBLAS (see gemm.hpp).
#include "kernels/cpu/gemm.hpp"

#include <cblas.h>

namespace loom::kernels::cpu {

void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    // An empty product: BLAS would reject the degenerate leading dimensions, and C = beta * C is all
    // that is left to do (beta = 0 must overwrite, not multiply, so garbage such as NaN goes away).
    for (int i = 0; i < m; ++i) {
      float* row = c + static_cast<long>(i) * ldc;
      for (int j = 0; j < n; ++j) row[j] = beta == 0.f ? 0.f : beta * row[j];
    }
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n,
              k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void set_blas_threads(int threads) { openblas_set_num_threads(threads < 1 ? 1 : threads); }

}  // namespace loom::kernels::cpu
