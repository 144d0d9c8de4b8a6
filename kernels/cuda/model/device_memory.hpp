// Device tensors of the model on the GPU: shared, pool-backed arrays whose release is stream-ordered.
//
// A `dtensor` may be read by several streams (the component streams of a rank, or another virtual
// rank's comm stream after an exchange). Whoever drops the last reference must first say on which
// stream the memory may be reused: `retire_on(stream)` (after that stream has seen every use, e.g.
// behind a fence of events). Until then the tensor frees on the stream it was allocated on.
#pragma once

#include <cuda_runtime_api.h>

#include <atomic>
#include <cstddef>
#include <memory>

#include "kernels/cuda/memory.hpp"
#include "kernels/cuda/types.hpp"

namespace loom::cuda::model {

class device_memory {
 public:
  device_memory(device_pool* pool, void* p, std::size_t bytes, cudaStream_t stream)
      : pool_(pool), data_(p), bytes_(bytes), free_on_(stream) {}
  ~device_memory() {
    if (data_) (void)pool_->release(data_, free_on_.load());
  }
  device_memory(const device_memory&) = delete;
  device_memory& operator=(const device_memory&) = delete;

  void* data() const { return data_; }
  std::size_t bytes() const { return bytes_; }
  // The stream whose order the free follows (set once every use is ordered before it).
  void retire_on(cudaStream_t s) { free_on_.store(s); }

 private:
  device_pool* pool_;
  void* data_;
  std::size_t bytes_;
  std::atomic<cudaStream_t> free_on_;
};

using dtensor = std::shared_ptr<device_memory>;

// `bytes` from the pool, usable on `stream` in its order.
inline expected<dtensor> allocate(device_pool& pool, std::size_t bytes, cudaStream_t stream) {
  auto p = pool.allocate(bytes == 0 ? 256 : bytes, stream);
  if (!p) return forward_error(p);
  return std::make_shared<device_memory>(&pool, *p, bytes, stream);
}

template <class T>
T* ptr(const dtensor& t) { return t ? static_cast<T*>(t->data()) : nullptr; }

inline std::size_t bytes_of(const dtensor& t) { return t ? t->bytes() : 0; }

}  // namespace loom::cuda::model
