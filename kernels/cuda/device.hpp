// CUDA device discovery and the smoke round trip, behind kernels/gpu_probe.hpp.
#pragma once

#include <span>
#include <vector>

#include "kernels/gpu_probe.hpp"
#include "support/expected.hpp"

namespace loom::cuda {

expected<std::vector<kernels::gpu_info>> list_devices();
expected<std::vector<float>> affine_round_trip(std::span<const float> x, float a, float b);

}  // namespace loom::cuda
