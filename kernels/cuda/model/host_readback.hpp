// Page-locked host memory for a component's small read-backs from the GPU (dispatch's route-plan
// counts), and an event that marks the copy done.
//
// With pageable memory, cudaMemcpyAsync to the host returns only once the copy is done, so nothing the
// caller enqueues after it reaches the GPU until then, and the stream idles while the host catches up.
// Into page-locked memory the copy is asynchronous: the caller enqueues the next kernels first and then
// waits on `copied()` for the copy alone. One per stream: a read-back must be consumed before the
// buffer is used again.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <memory>

#include "kernels/cuda/model/page_locked_buffer.hpp"
#include "kernels/cuda/types.hpp"

namespace loom::cuda::model {

class host_readback {
 public:
  static expected<host_readback> create();

  // At least n ints of page-locked memory (reallocated only when n grows past the last size).
  expected<int*> ints(std::size_t n);
  // The event to record right after the copy into ints() and to synchronize on before reading them.
  cudaEvent_t copied() const { return copied_.get(); }

 private:
  struct event_destroy {
    void operator()(CUevent_st* e) const { cudaEventDestroy(e); }
  };
  page_locked_buffer ints_;
  std::unique_ptr<CUevent_st, event_destroy> copied_;
};

}  // namespace loom::cuda::model
