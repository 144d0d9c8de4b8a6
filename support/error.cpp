#include "support/error.hpp"

#include <ostream>

namespace loom {

std::string_view to_string(errc code) noexcept {
  switch (code) {
    case errc::invalid_argument: return "invalid_argument";
    case errc::io_error: return "io_error";
    case errc::parse_error: return "parse_error";
    case errc::invalid_schedule: return "invalid_schedule";
    case errc::invalid_experiment: return "invalid_experiment";
    case errc::limit_exceeded: return "limit_exceeded";
    case errc::backend_error: return "backend_error";
    case errc::transport_error: return "transport_error";
    case errc::timeout: return "timeout";
    case errc::cancelled: return "cancelled";
    case errc::unavailable: return "unavailable";
    case errc::internal: return "internal";
  }
  return "unknown";
}

std::ostream& operator<<(std::ostream& out, errc code) { return out << to_string(code); }

std::string error::to_string() const {
  std::string out{loom::to_string(code)};
  out += ": ";
  out += message;
  return out;
}

}  // namespace loom
