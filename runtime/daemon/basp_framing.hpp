// The framing of CAF 0.17's BASP stream, as the daemon's gate follows it: a 32-byte header
// (caf/io/basp/header.hpp, BASP version 3: operation, two padding bytes, flags, payload size as a
// big-endian u32, then operation data and source and destination actor as u64s), the payload of
// the announced size, the next header, and so on. The scanner is fed the stream in whatever pieces
// the socket gives and reports each header's payload size once the header is complete.
#pragma once

#include <arpa/inet.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace loom::daemon {

inline constexpr std::size_t basp_header_bytes = 32;
inline constexpr std::size_t basp_payload_size_offset = 4;

struct basp_scanner {
  unsigned char header[basp_header_bytes];
  std::size_t header_have = 0;    // bytes of the next header seen so far
  std::uint64_t payload_left = 0; // bytes of the current payload still to come

  // Calls accept(payload size) for every header completed within these `n` bytes, in order; stops
  // and returns false as soon as accept does.
  template <class Accept>
  bool scan(const char* p, std::size_t n, Accept&& accept) {
    while (n > 0) {
      if (payload_left > 0) {
        const std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(payload_left, n));
        p += k;
        n -= k;
        payload_left -= k;
        continue;
      }
      const std::size_t k = std::min(n, basp_header_bytes - header_have);
      std::memcpy(header + header_have, p, k);
      header_have += k;
      p += k;
      n -= k;
      if (header_have < basp_header_bytes) break;
      header_have = 0;
      std::uint32_t size;
      std::memcpy(&size, header + basp_payload_size_offset, sizeof size);
      size = ntohl(size);
      if (!accept(size)) return false;
      payload_left = size;
    }
    return true;
  }
};

}  // namespace loom::daemon
