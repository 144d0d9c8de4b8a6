// What GPUs this process can use, asked the same way whether or not loom was built with CUDA.
//
// Tests and the CLI call these to decide between running on a GPU and skipping with a reason;
// without CUDA in the build every call returns errc::unavailable saying so.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "support/expected.hpp"

namespace loom::kernels {

struct gpu_info {
  int index = 0;
  std::string name;
  int multiprocessors = 0;
  int compute_major = 0;
  int compute_minor = 0;
  std::size_t memory_bytes = 0;
};

// The visible GPUs; an error (unavailable) names why there are none: no CUDA in this build,
// no driver, or no device.
expected<std::vector<gpu_info>> list_gpus();

// Smoke test of the whole path: copy `x` to GPU 0, compute a*x+b in a kernel, copy it back.
expected<std::vector<float>> gpu_affine_round_trip(std::span<const float> x, float a, float b);

}  // namespace loom::kernels
