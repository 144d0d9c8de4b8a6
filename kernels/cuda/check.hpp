// Turning CUDA status codes into loom errors without hiding control flow: callers write
//   if (auto e = check(cudaMalloc(&p, n), "cudaMalloc"); !e) return e;
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "support/expected.hpp"

namespace loom::cuda {

inline expected<void> check(cudaError_t status, const char* what) {
  if (status == cudaSuccess) return {};
  return unexpected(errc::backend_error,
                    std::string(what) + " failed: " + cudaGetErrorName(status) + " (" +
                        cudaGetErrorString(status) + ")");
}

}  // namespace loom::cuda
