// How the `ucx` transport lays a payload out on the wire.
//
// The UCX tag of every message: the sender's rank (13 bits), the message's form (3 bits), loom's 48-bit
// tag. The form says how to receive it, so the receiver, which learns a message's length by probing,
// can size the right vector before receiving into it:
//   packed    header and every vector's data in one message (small payloads; length 0: empty payload)
//   floats, doubles, ints    a payload with only that vector: the message is the vector itself, sent
//             from and received into the payload's own storage (one message, no copy of ours)
//   lead      a large payload with several vectors: a packed message of the small vectors, saying
//             which large ones follow, each as a body message (body_f, body_d, body_i, in that order)
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "actors/transport.hpp"
#include "support/expected.hpp"

namespace loom::transport::ucx_wire {

constexpr int form_shift = actors::tag_bits;
constexpr int rank_shift = actors::tag_bits + 3;
constexpr int max_ranks = 1 << (64 - rank_shift);  // 8192 (the schedules allow 4096)
constexpr std::uint64_t loom_tag_mask = (std::uint64_t{1} << actors::tag_bits) - 1;

enum class form : std::uint8_t { packed, floats, doubles, ints, lead, body_f, body_d, body_i };

inline std::uint64_t wire_tag(int from, form f, std::uint64_t tag) {
  return static_cast<std::uint64_t>(from) << rank_shift | static_cast<std::uint64_t>(f) << form_shift | (tag & loom_tag_mask);
}
inline int sender_of(std::uint64_t wire) { return static_cast<int>(wire >> rank_shift); }
inline form form_of(std::uint64_t wire) { return static_cast<form>((wire >> form_shift) & 7); }
inline std::uint64_t loom_tag_of(std::uint64_t wire) { return wire & loom_tag_mask; }

// A payload of several vectors whose data add up to at most this many bytes travels packed; in a
// larger one, a vector of at most this many bytes rides in the lead, a larger one as its own body.
// (Copying 8 KiB costs less than a message.)
constexpr std::size_t inline_limit = 8192;

// The header of a packed or lead message: the three vectors' lengths, and which travel as bodies
// (bit 0 floats, 1 doubles, 2 ints).
struct header {
  std::uint64_t count[3];
  std::uint64_t bodies;
};

// What a payload goes out as: one message of the single form, or packed, or a lead and bodies.
struct layout {
  form first = form::packed;   // the first (often only) message's form
  unsigned bodies = 0;         // lead: the vectors sent as bodies
};
layout layout_of(const actors::payload& p);

// A packed or lead message's bytes: the header, then the data of the vectors not in `bodies`.
// Written into `out` (resized, keeping its capacity).
void pack(const actors::payload& p, unsigned bodies, std::vector<std::uint8_t>& out);

// Reads a packed or lead message into `p` (the inline vectors), returning the body mask. A packed
// message of length 0 is the empty payload.
expected<unsigned> unpack(const std::uint8_t* data, std::size_t size, bool lead, actors::payload& p, header& h);

// The element size of a single or body form's vector.
std::size_t element_size(form f);

}  // namespace loom::transport::ucx_wire
