// Skipping GPU tests cleanly: a Boost.Test precondition that holds when a GPU is usable and
// otherwise prints "GPU tests skipped: <reason>", which ctest reports as a skipped test.
#pragma once

#include <boost/test/unit_test.hpp>

#include <iostream>

#include "kernels/gpu_probe.hpp"

namespace loom::test {

inline boost::test_tools::assertion_result gpu_present(boost::unit_test::test_unit_id) {
  auto gpus = kernels::list_gpus();
  if (gpus) return true;
  std::cout << "GPU tests skipped: " << gpus.error().message << std::endl;
  boost::test_tools::assertion_result r(false);
  r.message() << "no GPU: " << gpus.error().message;
  return r;
}

}  // namespace loom::test
