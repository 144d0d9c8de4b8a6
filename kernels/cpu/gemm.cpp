// Dense matrix products through OpenBLAS (see gemm.hpp).
#include "kernels/cpu/gemm.hpp"

#include <cblas.h>

#include <vector>

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

void outer_accumulate_f64(int rows, int m, int n, const float* a, int lda, const float* b, int ldb, double* c) {
  std::vector<double> brow(static_cast<std::size_t>(n));
  for (int r = 0; r < rows; ++r) {
    const float* ar = a + static_cast<std::size_t>(r) * lda;
    const float* br = b + static_cast<std::size_t>(r) * ldb;
    for (int j = 0; j < n; ++j) brow[j] = br[j];
    for (int i = 0; i < m; ++i) {
      const double ai = ar[i];
      if (ai == 0.0) continue;
      double* ci = c + static_cast<std::size_t>(i) * n;
      for (int j = 0; j < n; ++j) ci[j] += ai * brow[j];
    }
  }
}

}  // namespace loom::kernels::cpu
