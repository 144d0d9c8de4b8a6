// Dense bf16 GEMMs through cublasLt (the shared expert, attention projections, router and LM head), with
// fp32 accumulation. `blas` owns the cublasLt/cuBLAS handles, a workspace and a cache of the chosen
// algorithm per shape; create one per device and stream family, and use it from one thread at a time.
//
// Row-major, like kernels/cpu/gemm.hpp: C[m, n] = alpha * op(A) op(B) + beta * C, op(A) m x k, op(B) k x n,
// leading dimensions in elements. beta = 0 overwrites C. Weight gradients use the fp32-output form with
// beta = 1 to accumulate into fp32 buffers. `sm_target` > 0 asks cublasLt for a kernel that fits that
// many SMs (CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET), for a GEMM that runs beside communication kernels.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "kernels/cuda/types.hpp"

namespace loom::cuda {

class blas {
 public:
  static expected<std::unique_ptr<blas>> create(std::size_t workspace_bytes = std::size_t{32} << 20);
  ~blas();
  blas(const blas&) = delete;
  blas& operator=(const blas&) = delete;

  // C (bf16) = alpha op(A) op(B) + beta C.
  expected<void> gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const bf16* a, int lda,
                      const bf16* b, int ldb, float beta, bf16* c, int ldc, cudaStream_t stream, int sm_target = 0);
  // C (fp32) = alpha op(A) op(B) + beta C: beta = 1 accumulates weight gradients.
  expected<void> gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const bf16* a, int lda,
                      const bf16* b, int ldb, float beta, float* c, int ldc, cudaStream_t stream, int sm_target = 0);

  // The cuBLAS (not Lt) handle, for cublasGemmGroupedBatchedEx; bound to `stream` on each use.
  void* cublas_handle() const { return cublas_; }

  struct impl;

 private:
  blas() = default;
  expected<void> run(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const bf16* a, int lda,
                     const bf16* b, int ldb, float beta, void* c, bool c_fp32, int ldc, cudaStream_t stream, int sm_target);
  std::unique_ptr<impl> impl_;
  void* cublas_ = nullptr;
};

}  // namespace loom::cuda
