// The GPU smoke test: data goes to the GPU, through a kernel, and back unchanged in meaning.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <random>

#include "tests/gpu_test_support.hpp"

BOOST_AUTO_TEST_SUITE(gpu_smoke, *boost::unit_test::precondition(loom::test::gpu_present))

BOOST_AUTO_TEST_CASE(affine_kernel_round_trip) {
  std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<float> dist(-4.f, 4.f);
  std::vector<float> x(1 << 20);
  for (auto& v : x) v = dist(rng);
  auto y = loom::kernels::gpu_affine_round_trip(x, 1.5f, -0.25f);
  BOOST_TEST_REQUIRE(y.has_value(), (y ? "" : y.error().message));
  BOOST_TEST_REQUIRE(y->size() == x.size());
  for (size_t i = 0; i < x.size(); ++i)
    BOOST_TEST_REQUIRE(std::fabs((*y)[i] - (1.5f * x[i] - 0.25f)) <= 1e-6f * (1 + std::fabs(x[i])));
  auto gpus = loom::kernels::list_gpus();
  std::cout << "GPU smoke test ran on " << (*gpus)[0].name << " (" << (*gpus)[0].multiprocessors << " SMs)\n";
}

BOOST_AUTO_TEST_SUITE_END()
