// cuBLAS and cuBLASLt, loaded on first use (dlopen) instead of linked. Their libraries' static
// initializers take about 100 ms and 200 MB at every process start: linked, every `loom` command
// (`loom status` included) would pay that, GPU or not. The table holds the few entry points loom uses.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>

#include "support/expected.hpp"

namespace loom::cuda {

struct cublas_api {
  // cuBLASLt
  decltype(&::cublasLtCreate) lt_create;
  decltype(&::cublasLtDestroy) lt_destroy;
  decltype(&::cublasLtMatmul) lt_matmul;
  decltype(&::cublasLtMatmulDescCreate) lt_matmul_desc_create;
  decltype(&::cublasLtMatmulDescDestroy) lt_matmul_desc_destroy;
  decltype(&::cublasLtMatmulDescSetAttribute) lt_matmul_desc_set_attribute;
  decltype(&::cublasLtMatrixLayoutCreate) lt_matrix_layout_create;
  decltype(&::cublasLtMatrixLayoutDestroy) lt_matrix_layout_destroy;
  decltype(&::cublasLtMatmulPreferenceCreate) lt_preference_create;
  decltype(&::cublasLtMatmulPreferenceDestroy) lt_preference_destroy;
  decltype(&::cublasLtMatmulPreferenceSetAttribute) lt_preference_set_attribute;
  decltype(&::cublasLtMatmulAlgoGetHeuristic) lt_algo_get_heuristic;
  decltype(&::cublasLtGetStatusName) lt_status_name;
  decltype(&::cublasLtGetStatusString) lt_status_string;
  // cuBLAS
  decltype(&::cublasCreate_v2) create;
  decltype(&::cublasDestroy_v2) destroy;
  decltype(&::cublasSetStream_v2) set_stream;
  decltype(&::cublasGemmGroupedBatchedEx) gemm_grouped_batched_ex;
  decltype(&::cublasGetStatusName) status_name;
  decltype(&::cublasGetStatusString) status_string;
};

// Loads both libraries once (thread-safe); the error names the library and dlerror()'s reason.
expected<const cublas_api*> cublas();

}  // namespace loom::cuda
