#include "kernels/gpu_probe.hpp"

#if LOOM_WITH_CUDA
#include "kernels/cuda/device.hpp"
#endif

namespace loom::kernels {

#if LOOM_WITH_CUDA

expected<std::vector<gpu_info>> list_gpus() { return cuda::list_devices(); }

expected<std::vector<float>> gpu_affine_round_trip(std::span<const float> x, float a, float b) {
  return cuda::affine_round_trip(x, a, b);
}

#else

namespace {
unexpected not_built() {
  return unexpected(errc::unavailable, "loom was built without CUDA (LOOM_CUDA=OFF or no nvcc found)");
}
}  // namespace

expected<std::vector<gpu_info>> list_gpus() { return not_built(); }

expected<std::vector<float>> gpu_affine_round_trip(std::span<const float>, float, float) {
  return not_built();
}

#endif

}  // namespace loom::kernels
