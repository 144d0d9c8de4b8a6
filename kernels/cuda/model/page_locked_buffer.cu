#include "kernels/cuda/model/page_locked_buffer.hpp"

#include <cuda_runtime_api.h>

#include <string>

#include "kernels/cuda/check.hpp"

namespace loom::cuda::model {

void page_locked_buffer::host_free::operator()(void* p) const { cudaFreeHost(p); }

expected<void*> page_locked_buffer::reserve(std::size_t bytes, const char* what) {
  if (bytes <= bytes_) return data_.get();
  data_.reset();
  bytes_ = 0;
  void* p = nullptr;
  const std::string action = std::string("allocating page-locked ") + what;
  if (auto ok = check(cudaMallocHost(&p, bytes), action.c_str()); !ok) return forward_error(ok);
  data_.reset(p);
  bytes_ = bytes;
  return p;
}

}  // namespace loom::cuda::model
