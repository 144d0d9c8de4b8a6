// cublasLt wrapper (see gemm.hpp). Row-major C = op(A) op(B) is computed as the column-major product
// C^T = op(B)^T op(A)^T, so A and B swap places and keep their transpose flags.
#include <cublasLt.h>
#include <cublas_v2.h>

#include <map>
#include <string>
#include <tuple>

#include "kernels/cuda/gemm.hpp"

#include "kernels/cuda/cublas_api.hpp"

namespace loom::cuda {

namespace {

// Every blas call goes through the loaded table: a blas exists only once cublas() succeeded.
const cublas_api& api() { return **cublas(); }

expected<void> lt_check(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return {};
  return unexpected(errc::backend_error, std::string(what) + " failed: " + api().lt_status_name(s) + " (" +
                                             api().lt_status_string(s) + ")");
}

}  // namespace

struct blas::impl {
  cublasLtHandle_t lt = nullptr;
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
  using key = std::tuple<bool, bool, int, int, int, int, int, int, bool, bool, int>;
  std::map<key, cublasLtMatmulAlgo_t> algos;
};

expected<std::unique_ptr<blas>> blas::create(std::size_t workspace_bytes) {
  if (auto loaded = cublas(); !loaded) return forward_error(loaded);
  std::unique_ptr<blas> b(new blas());
  b->impl_ = std::make_unique<impl>();
  if (auto e = lt_check(api().lt_create(&b->impl_->lt), "cublasLtCreate"); !e) return forward_error(e);
  cublasHandle_t h = nullptr;
  if (auto e = lt_check(api().create(&h), "cublasCreate"); !e) return forward_error(e);
  b->cublas_ = h;
  if (auto e = check(cudaMalloc(&b->impl_->workspace, workspace_bytes), "cudaMalloc(cublasLt workspace)"); !e)
    return forward_error(e);
  b->impl_->workspace_bytes = workspace_bytes;
  return b;
}

blas::~blas() {
  if (impl_) {
    if (impl_->workspace != nullptr) cudaFree(impl_->workspace);
    if (impl_->lt != nullptr) api().lt_destroy(impl_->lt);
  }
  if (cublas_ != nullptr) api().destroy(static_cast<cublasHandle_t>(cublas_));
}

expected<void> blas::gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const bf16* a,
                          int lda, const bf16* b, int ldb, float beta, bf16* c, int ldc,
                          cudaStream_t stream, int sm_target) {
  return run(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, false, ldc, stream, sm_target);
}

expected<void> blas::gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const bf16* a,
                          int lda, const bf16* b, int ldb, float beta, float* c, int ldc,
                          cudaStream_t stream, int sm_target) {
  return run(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, true, ldc, stream, sm_target);
}

expected<void> blas::run(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const bf16* a, int lda,
                         const bf16* b, int ldb, float beta, void* c, bool c_fp32, int ldc,
                         cudaStream_t stream, int sm_target) {
  if (m < 0 || n < 0 || k < 0) return invalid("blas::gemm: negative size");
  if (m == 0 || n == 0) return {};
  // Column-major view: C^T [n x m] = op(B)^T [n x k] * op(A)^T [k x m].
  // B row-major (k x n, or n x k when trans_b) is column-major (n x k) or (k x n) with ld = ldb.
  const cublasOperation_t op_first = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;   // applied to B^T storage
  const cublasOperation_t op_second = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;  // applied to A^T storage
  const uint64_t b_rows = trans_b ? k : n, b_cols = trans_b ? n : k;
  const uint64_t a_rows = trans_a ? m : k, a_cols = trans_a ? k : m;
  const cudaDataType_t c_type = c_fp32 ? CUDA_R_32F : CUDA_R_16BF;

  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  auto cleanup = [&] {
    if (pref) api().lt_preference_destroy(pref);
    if (lc) api().lt_matrix_layout_destroy(lc);
    if (lb) api().lt_matrix_layout_destroy(lb);
    if (la) api().lt_matrix_layout_destroy(la);
    if (op) api().lt_matmul_desc_destroy(op);
  };
  auto body = [&]() -> expected<void> {
    if (auto e = lt_check(api().lt_matmul_desc_create(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F),
                          "cublasLtMatmulDescCreate");
        !e)
      return e;
    if (auto e = lt_check(
            api().lt_matmul_desc_set_attribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &op_first, sizeof(op_first)),
            "cublasLtMatmulDescSetAttribute(TRANSA)");
        !e)
      return e;
    if (auto e = lt_check(
            api().lt_matmul_desc_set_attribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &op_second, sizeof(op_second)),
            "cublasLtMatmulDescSetAttribute(TRANSB)");
        !e)
      return e;
    const int32_t target = sm_target;
    if (target > 0)
      if (auto e = lt_check(api().lt_matmul_desc_set_attribute(op, CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET, &target,
                                                                 sizeof(target)),
                            "cublasLtMatmulDescSetAttribute(SM_COUNT_TARGET)");
          !e)
        return e;
    if (auto e = lt_check(api().lt_matrix_layout_create(&la, CUDA_R_16BF, b_rows, b_cols, ldb),
                          "cublasLtMatrixLayoutCreate(B)");
        !e)
      return e;
    if (auto e = lt_check(api().lt_matrix_layout_create(&lb, CUDA_R_16BF, a_rows, a_cols, lda),
                          "cublasLtMatrixLayoutCreate(A)");
        !e)
      return e;
    if (auto e =
            lt_check(api().lt_matrix_layout_create(&lc, c_type, n, m, ldc), "cublasLtMatrixLayoutCreate(C)");
        !e)
      return e;
    const impl::key key{trans_a, trans_b, m, n, k, lda, ldb, ldc, c_fp32, beta != 0.f, target};
    auto found = impl_->algos.find(key);
    if (found == impl_->algos.end()) {
      if (auto e = lt_check(api().lt_preference_create(&pref), "cublasLtMatmulPreferenceCreate"); !e)
        return e;
      const uint64_t ws = impl_->workspace_bytes;
      if (auto e = lt_check(api().lt_preference_set_attribute(
                                pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)),
                            "cublasLtMatmulPreferenceSetAttribute");
          !e)
        return e;
      cublasLtMatmulHeuristicResult_t result{};
      int found_count = 0;
      if (auto e = lt_check(
              api().lt_algo_get_heuristic(impl_->lt, op, la, lb, lc, lc, pref, 1, &result, &found_count),
              "cublasLtMatmulAlgoGetHeuristic");
          !e)
        return e;
      if (found_count == 0)
        return unexpected(errc::backend_error, "cublasLt found no algorithm for this GEMM");
      found = impl_->algos.emplace(key, result.algo).first;
    }
    return lt_check(api().lt_matmul(impl_->lt, op, &alpha, b, la, a, lb, &beta, c, lc, c, lc, &found->second,
                                   impl_->workspace, impl_->workspace_bytes, stream),
                    "cublasLtMatmul");
  };
  auto status = body();
  cleanup();
  return status;
}

}  // namespace loom::cuda
