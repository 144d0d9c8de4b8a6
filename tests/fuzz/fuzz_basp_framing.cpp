// libFuzzer target: the BASP framing the daemon's gate follows (runtime/daemon/basp_framing.hpp).
// The first input byte picks how the rest is cut into pieces, as a socket might deliver it; scanning
// the pieces must report exactly the payload sizes that scanning the whole stream at once reports,
// and end in the same state.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/daemon/basp_framing.hpp"
#include "tests/fuzz/common.hpp"

using loom::daemon::basp_scanner;

namespace {

std::vector<std::uint32_t> scan(const std::uint8_t* data, std::size_t size, std::size_t (*piece)(std::size_t, std::uint8_t),
                                std::uint8_t seed, basp_scanner& s) {
  std::vector<std::uint32_t> seen;
  for (std::size_t at = 0; at < size;) {
    const std::size_t n = std::min(size - at, piece(at, seed));
    s.scan(reinterpret_cast<const char*>(data) + at, n, [&](std::uint32_t announced) {
      seen.push_back(announced);
      return true;
    });
    at += n;
  }
  return seen;
}

std::size_t whole(std::size_t, std::uint8_t) { return ~std::size_t{0}; }
std::size_t uneven(std::size_t at, std::uint8_t seed) { return 1 + (at * 31 + seed) % (seed + 1u); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t seed = data[0];
  ++data;
  --size;
  basp_scanner a, b;
  const auto all_at_once = scan(data, size, whole, seed, a);
  const auto in_pieces = scan(data, size, uneven, seed, b);
  if (all_at_once != in_pieces)
    loom::fuzz::bug("the framing depends on how the stream is cut", std::to_string(all_at_once.size()) + " against " +
                                                                         std::to_string(in_pieces.size()) + " headers");
  if (a.header_have != b.header_have || a.payload_left != b.payload_left || a.header_have >= loom::daemon::basp_header_bytes)
    loom::fuzz::bug("the framing ends in a different state when the stream is cut", "");
  return 0;
}
