#include "kernels/cuda/model/host_readback.hpp"

#include "kernels/cuda/check.hpp"

namespace loom::cuda::model {

expected<host_readback> host_readback::create() {
  host_readback r;
  cudaEvent_t e = nullptr;
  // No timing: the event only orders the host after the copy, and untimed events are cheaper to sync on.
  if (auto ok = check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "creating the read-back event");
      !ok)
    return forward_error(ok);
  r.copied_.reset(e);
  return r;
}

expected<int*> host_readback::ints(std::size_t n) {
  if (n <= capacity_) return ints_.get();
  ints_.reset();
  capacity_ = 0;
  void* p = nullptr;
  if (auto ok = check(cudaMallocHost(&p, n * sizeof(int)), "allocating page-locked read-back memory"); !ok)
    return forward_error(ok);
  ints_.reset(static_cast<int*>(p));
  capacity_ = n;
  return ints_.get();
}

}  // namespace loom::cuda::model
