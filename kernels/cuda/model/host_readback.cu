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
  auto p = ints_.reserve(n * sizeof(int), "read-back memory");
  if (!p) return forward_error(p);
  return static_cast<int*>(*p);
}

}  // namespace loom::cuda::model
