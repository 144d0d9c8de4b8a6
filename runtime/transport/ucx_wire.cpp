#include "runtime/transport/ucx_wire.hpp"

#include <cstring>

namespace loom::transport::ucx_wire {

namespace {

constexpr std::size_t sizes[3] = {sizeof(float), sizeof(double), sizeof(std::int32_t)};

std::size_t bytes_of(const actors::payload& p, int k) {
  return (k == 0 ? p.f.size() : k == 1 ? p.d.size() : p.i.size()) * sizes[k];
}
const void* data_of(const actors::payload& p, int k) {
  return k == 0 ? static_cast<const void*>(p.f.data()) : k == 1 ? static_cast<const void*>(p.d.data()) : p.i.data();
}

}  // namespace

layout layout_of(const actors::payload& p) {
  int nonempty = 0, only = 0;
  std::size_t total = 0;
  for (int k = 0; k < 3; ++k)
    if (const std::size_t b = bytes_of(p, k); b > 0) {
      ++nonempty;
      only = k;
      total += b;
    }
  layout l;
  if (nonempty == 1) {
    l.first = static_cast<form>(static_cast<int>(form::floats) + only);
    return l;
  }
  if (total <= inline_limit) return l;  // packed (also the empty payload)
  for (int k = 0; k < 3; ++k)
    if (bytes_of(p, k) > inline_limit) l.bodies |= 1u << k;
  if (l.bodies != 0) l.first = form::lead;
  return l;
}

void pack(const actors::payload& p, unsigned bodies, std::vector<std::uint8_t>& out) {
  const header h{{p.f.size(), p.d.size(), p.i.size()}, bodies};
  std::size_t size = sizeof h;
  for (int k = 0; k < 3; ++k)
    if (!(bodies & (1u << k))) size += bytes_of(p, k);
  if (bodies == 0 && size == sizeof h) {  // nothing at all: the empty message
    out.clear();
    return;
  }
  out.resize(size);
  std::uint8_t* at = out.data();
  std::memcpy(at, &h, sizeof h);
  at += sizeof h;
  for (int k = 0; k < 3; ++k) {
    if (bodies & (1u << k)) continue;
    if (const std::size_t b = bytes_of(p, k); b > 0) {
      std::memcpy(at, data_of(p, k), b);
      at += b;
    }
  }
}

expected<unsigned> unpack(const std::uint8_t* data, std::size_t size, bool lead, actors::payload& p, header& h) {
  if (size == 0 && !lead) {
    h = header{{0, 0, 0}, 0};
    return 0u;
  }
  if (size < sizeof h) return unexpected(errc::transport_error, "ucx transport: a message shorter than its header");
  std::memcpy(&h, data, sizeof h);
  if (h.bodies > 7 || (lead ? h.bodies == 0 : h.bodies != 0))
    return unexpected(errc::transport_error, "ucx transport: a message with a malformed header");
  std::size_t expect = sizeof h;
  for (int k = 0; k < 3; ++k) {
    if (h.count[k] > size) {
      if (h.bodies & (1u << k)) continue;  // a body may be larger than the lead
      return unexpected(errc::transport_error, "ucx transport: a message whose sizes do not add up");
    }
    if (!(h.bodies & (1u << k))) expect += h.count[k] * sizes[k];
  }
  if (expect != size) return unexpected(errc::transport_error, "ucx transport: a message whose sizes do not add up");
  const std::uint8_t* at = data + sizeof h;
  auto take = [&](auto& v, int k) {
    if (h.bodies & (1u << k)) return;
    v.resize(h.count[k]);
    if (!v.empty()) std::memcpy(v.data(), at, v.size() * sizes[k]);
    at += v.size() * sizes[k];
  };
  take(p.f, 0);
  take(p.d, 1);
  take(p.i, 2);
  return static_cast<unsigned>(h.bodies);
}

std::size_t element_size(form f) {
  switch (f) {
    case form::floats: case form::body_f: return sizeof(float);
    case form::doubles: case form::body_d: return sizeof(double);
    case form::ints: case form::body_i: return sizeof(std::int32_t);
    default: return 1;
  }
}

}  // namespace loom::transport::ucx_wire
