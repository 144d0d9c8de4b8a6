#include <cstdint>

#include "kernels/cuda/memory.hpp"

namespace loom::cuda {

expected<device_pool> device_pool::create(int device) {
  cudaMemPoolProps props{};
  props.allocType = cudaMemAllocationTypePinned;
  props.handleTypes = cudaMemHandleTypeNone;
  props.location.type = cudaMemLocationTypeDevice;
  props.location.id = device;
  device_pool out;
  if (auto e = check(cudaMemPoolCreate(&out.pool_, &props), "cudaMemPoolCreate"); !e) return forward_error(e);
  std::uint64_t threshold = UINT64_MAX;  // keep everything freed: no trips to the driver after warm-up
  if (auto e = check(cudaMemPoolSetAttribute(out.pool_, cudaMemPoolAttrReleaseThreshold, &threshold),
                     "cudaMemPoolSetAttribute(release threshold)");
      !e)
    return forward_error(e);
  return out;
}

device_pool& device_pool::operator=(device_pool&& o) noexcept {
  if (this != &o) {
    if (pool_ != nullptr) cudaMemPoolDestroy(pool_);
    pool_ = std::exchange(o.pool_, nullptr);
  }
  return *this;
}

device_pool::~device_pool() {
  if (pool_ != nullptr) cudaMemPoolDestroy(pool_);
}

expected<void*> device_pool::allocate(std::size_t bytes, cudaStream_t stream) {
  if (pool_ == nullptr) return unexpected(errc::invalid_argument, "device_pool::allocate on an empty pool");
  void* p = nullptr;
  if (auto e = check(cudaMallocFromPoolAsync(&p, bytes == 0 ? 1 : bytes, pool_, stream),
                     "cudaMallocFromPoolAsync");
      !e)
    return forward_error(e);
  return p;
}

expected<void> device_pool::release(void* p, cudaStream_t stream) {
  if (p == nullptr) return {};
  return check(cudaFreeAsync(p, stream), "cudaFreeAsync");
}

std::size_t device_pool::reserved_bytes() const {
  std::uint64_t v = 0;
  if (pool_ != nullptr) cudaMemPoolGetAttribute(pool_, cudaMemPoolAttrReservedMemCurrent, &v);
  return static_cast<std::size_t>(v);
}

}  // namespace loom::cuda
