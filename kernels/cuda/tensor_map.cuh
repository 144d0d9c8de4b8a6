// Host side of TMA (the tensor memory accelerator): 2-D bf16 tensor maps for cp.async.bulk.tensor loads,
// encoded through the driver entry point found at run time (so nothing links libcuda). Not a public header.
#pragma once

#include <cuda.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <mutex>
#include <string>

#include "kernels/cuda/types.hpp"

namespace loom::cuda::dev {

using tensor_map_encode_fn = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*,
                                          const cuuint64_t*, const cuuint64_t*, const cuuint32_t*,
                                          const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                                          CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

inline expected<tensor_map_encode_fn> tensor_map_encoder() {
  static std::once_flag once;
  static tensor_map_encode_fn fn = nullptr;
  static cudaError_t status = cudaSuccess;
  std::call_once(once, [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q{};
    status = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q);
    if (status == cudaSuccess && q == cudaDriverEntryPointSuccess)
      fn = reinterpret_cast<tensor_map_encode_fn>(p);
  });
  if (fn == nullptr) {
    if (status != cudaSuccess)
      return forward_error(check(status, "cudaGetDriverEntryPointByVersion(cuTensorMapEncodeTiled)"));
    return unexpected(errc::backend_error, "the driver has no cuTensorMapEncodeTiled");
  }
  return fn;
}

// A bf16 [outer, inner] view with rows `row_stride` elements apart (inner contiguous), boxes of
// box_outer x box_inner elements, 128-byte swizzle, zeros outside.
inline expected<CUtensorMap> make_tensor_map(const void* base, std::uint64_t inner, std::uint64_t outer,
                                             std::uint64_t row_stride, std::uint32_t box_inner,
                                             std::uint32_t box_outer) {
  auto fn = tensor_map_encoder();
  if (!fn) return forward_error(fn);
  CUtensorMap map{};
  const cuuint64_t dims[2] = {inner, outer};
  const cuuint64_t strides[1] = {row_stride * 2};
  const cuuint32_t box[2] = {box_inner, box_outer};
  const cuuint32_t estr[2] = {1, 1};
  const CUresult r = (*fn)(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<void*>(base), dims, strides,
                           box, estr, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                           CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    return unexpected(errc::backend_error,
                      "cuTensorMapEncodeTiled failed with CUresult " + std::to_string(static_cast<int>(r)));
  return map;
}

}  // namespace loom::cuda::dev
