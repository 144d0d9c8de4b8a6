// Types and error helpers shared by the CUDA kernels' host headers (kernels/cuda/*.hpp).
//
// Every host entry point takes raw device pointers, sizes and a cudaStream_t, enqueues its work on the
// stream without synchronising, and returns loom::expected<void>: the text of the first CUDA/cuBLAS error
// (a failed call, or the launch error read with cudaGetLastError after each kernel launch).
// Activations and the weights' GEMM copies are bf16; reductions and accumulators are fp32.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <string>

#include "kernels/cuda/check.hpp"
#include "support/expected.hpp"

namespace loom::cuda {

using bf16 = __nv_bfloat16;

// The launch status of the kernel just enqueued: `return launched("rmsnorm_forward");`.
inline expected<void> launched(const char* what) { return check(cudaGetLastError(), what); }

inline expected<void> invalid(const std::string& what) { return unexpected(errc::invalid_argument, what); }

}  // namespace loom::cuda
