#include "kernels/cuda/cublas_api.hpp"

#include <dlfcn.h>

#include <mutex>
#include <string>

namespace loom::cuda {

namespace {

// The sonames of the CUDA release the headers belong to, e.g. libcublasLt.so.13.
std::string soname(const char* base) { return std::string(base) + ".so." + std::to_string(CUBLAS_VER_MAJOR); }

template <class F>
bool resolve(void* lib, const char* name, F& out, std::string& missing) {
  out = reinterpret_cast<F>(::dlsym(lib, name));
  if (!out) missing += std::string(missing.empty() ? "" : ", ") + name;
  return out != nullptr;
}

expected<cublas_api> load() {
  const std::string lt_name = soname("libcublasLt"), blas_name = soname("libcublas");
  void* lt = ::dlopen(lt_name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lt) return unexpected(errc::unavailable, "cannot load " + lt_name + ": " + ::dlerror());
  void* blas = ::dlopen(blas_name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!blas) return unexpected(errc::unavailable, "cannot load " + blas_name + ": " + ::dlerror());
  cublas_api a{};
  std::string missing;
  resolve(lt, "cublasLtCreate", a.lt_create, missing);
  resolve(lt, "cublasLtDestroy", a.lt_destroy, missing);
  resolve(lt, "cublasLtMatmul", a.lt_matmul, missing);
  resolve(lt, "cublasLtMatmulDescCreate", a.lt_matmul_desc_create, missing);
  resolve(lt, "cublasLtMatmulDescDestroy", a.lt_matmul_desc_destroy, missing);
  resolve(lt, "cublasLtMatmulDescSetAttribute", a.lt_matmul_desc_set_attribute, missing);
  resolve(lt, "cublasLtMatrixLayoutCreate", a.lt_matrix_layout_create, missing);
  resolve(lt, "cublasLtMatrixLayoutDestroy", a.lt_matrix_layout_destroy, missing);
  resolve(lt, "cublasLtMatmulPreferenceCreate", a.lt_preference_create, missing);
  resolve(lt, "cublasLtMatmulPreferenceDestroy", a.lt_preference_destroy, missing);
  resolve(lt, "cublasLtMatmulPreferenceSetAttribute", a.lt_preference_set_attribute, missing);
  resolve(lt, "cublasLtMatmulAlgoGetHeuristic", a.lt_algo_get_heuristic, missing);
  resolve(lt, "cublasLtGetStatusName", a.lt_status_name, missing);
  resolve(lt, "cublasLtGetStatusString", a.lt_status_string, missing);
  resolve(blas, "cublasCreate_v2", a.create, missing);
  resolve(blas, "cublasDestroy_v2", a.destroy, missing);
  resolve(blas, "cublasSetStream_v2", a.set_stream, missing);
  resolve(blas, "cublasGemmGroupedBatchedEx", a.gemm_grouped_batched_ex, missing);
  resolve(blas, "cublasGetStatusName", a.status_name, missing);
  resolve(blas, "cublasGetStatusString", a.status_string, missing);
  if (!missing.empty()) return unexpected(errc::unavailable, "cuBLAS lacks " + missing + " (" + lt_name + ", " + blas_name + ")");
  return a;
}

}  // namespace

expected<const cublas_api*> cublas() {
  static std::once_flag once;
  static expected<cublas_api> api = unexpected(errc::internal, "not loaded");
  std::call_once(once, [] { api = load(); });
  if (!api) return unexpected(api.error());
  return &*api;
}

}  // namespace loom::cuda
