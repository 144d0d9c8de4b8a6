// A device memory pool for the kernels' buffers and workspaces: allocations come from a CUDA stream-ordered
// pool (cudaMallocFromPoolAsync) whose release threshold is unlimited, so memory freed on a stream is
// kept and handed out again without a cudaMalloc: after the first step nothing on the hot path asks the
// driver for memory. `device_buffer` is the owning handle (freed, stream-ordered, when it goes away).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <utility>

#include "kernels/cuda/types.hpp"

namespace loom::cuda {

class device_pool {
 public:
  // A pool on `device` that keeps freed memory (release threshold = unlimited).
  static expected<device_pool> create(int device = 0);
  device_pool() = default;
  device_pool(device_pool&& o) noexcept : pool_(std::exchange(o.pool_, nullptr)) {}
  device_pool& operator=(device_pool&& o) noexcept;
  device_pool(const device_pool&) = delete;
  device_pool& operator=(const device_pool&) = delete;
  ~device_pool();

  // `bytes` of device memory usable on `stream` once the work before it there is done (256-byte aligned).
  expected<void*> allocate(std::size_t bytes, cudaStream_t stream);
  // Returns p to the pool once the work enqueued on `stream` so far is done.
  expected<void> release(void* p, cudaStream_t stream);
  // Bytes the pool holds from the driver now (used and cached).
  std::size_t reserved_bytes() const;
  cudaMemPool_t handle() const { return pool_; }

 private:
  cudaMemPool_t pool_ = nullptr;
};

// An owning, typed view of pool memory: `auto b = device_buffer<float>::create(pool, n, stream);`.
template <class T>
class device_buffer {
 public:
  static expected<device_buffer> create(device_pool& pool, std::size_t count, cudaStream_t stream) {
    auto p = pool.allocate(count * sizeof(T), stream);
    if (!p) return forward_error(p);
    device_buffer b;
    b.pool_ = &pool;
    b.stream_ = stream;
    b.data_ = static_cast<T*>(*p);
    b.count_ = count;
    return b;
  }
  device_buffer() = default;
  device_buffer(device_buffer&& o) noexcept
      : pool_(o.pool_), stream_(o.stream_), data_(std::exchange(o.data_, nullptr)), count_(o.count_) {}
  device_buffer& operator=(device_buffer&& o) noexcept {
    if (this != &o) {
      reset();
      pool_ = o.pool_;
      stream_ = o.stream_;
      data_ = std::exchange(o.data_, nullptr);
      count_ = o.count_;
    }
    return *this;
  }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  ~device_buffer() { reset(); }

  T* data() const { return data_; }
  std::size_t size() const { return count_; }
  std::size_t bytes() const { return count_ * sizeof(T); }
  // Frees now (stream-ordered); errors at this point are only reported by the next checked call.
  void reset() {
    if (data_ != nullptr && pool_ != nullptr) (void)pool_->release(data_, stream_);
    data_ = nullptr;
    count_ = 0;
  }

 private:
  device_pool* pool_ = nullptr;
  cudaStream_t stream_ = nullptr;
  T* data_ = nullptr;
  std::size_t count_ = 0;
};

}  // namespace loom::cuda
