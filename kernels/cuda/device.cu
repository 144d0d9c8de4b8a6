#include <cuda_runtime.h>

#include "kernels/cuda/check.hpp"
#include "kernels/cuda/device.hpp"

namespace loom::cuda {

expected<std::vector<kernels::gpu_info>> list_devices() {
  int count = 0;
  if (cudaError_t status = cudaGetDeviceCount(&count); status != cudaSuccess) {
    cudaGetLastError();  // clear the sticky status so later calls start clean
    return unexpected(errc::unavailable, std::string("no usable CUDA device: ") + cudaGetErrorString(status));
  }
  if (count == 0) return unexpected(errc::unavailable, "no CUDA device is visible");
  std::vector<kernels::gpu_info> out;
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (auto ok = check(cudaGetDeviceProperties(&prop, i), "cudaGetDeviceProperties"); !ok)
      return forward_error(ok);
    out.push_back({i, prop.name, prop.multiProcessorCount, prop.major, prop.minor, prop.totalGlobalMem});
  }
  return out;
}

namespace {

__global__ void affine_kernel(const float* x, float* y, float a, float b, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) y[i] = a * x[i] + b;
}

}  // namespace

expected<std::vector<float>> affine_round_trip(std::span<const float> x, float a, float b) {
  if (auto gpus = list_devices(); !gpus) return forward_error(gpus);
  const int n = static_cast<int>(x.size());
  const size_t bytes = x.size() * sizeof(float);
  float* dx = nullptr;
  float* dy = nullptr;
  std::vector<float> y(x.size());
  auto run = [&]() -> expected<void> {
    if (auto e = check(cudaMalloc(&dx, bytes), "cudaMalloc"); !e) return e;
    if (auto e = check(cudaMalloc(&dy, bytes), "cudaMalloc"); !e) return e;
    if (auto e = check(cudaMemcpy(dx, x.data(), bytes, cudaMemcpyHostToDevice), "cudaMemcpy H2D"); !e) return e;
    affine_kernel<<<(n + 255) / 256, 256>>>(dx, dy, a, b, n);
    if (auto e = check(cudaGetLastError(), "affine_kernel launch"); !e) return e;
    return check(cudaMemcpy(y.data(), dy, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
  };
  auto status = run();
  cudaFree(dx);
  cudaFree(dy);
  if (!status) return forward_error(status);
  return y;
}

}  // namespace loom::cuda
