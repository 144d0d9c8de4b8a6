// The one Boost.Test main shared by each test executable.
#define BOOST_TEST_MODULE loom
#include <boost/test/unit_test.hpp>
