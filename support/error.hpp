// loom::error: the one error type that crosses layers, and the codes it carries.
//
// Every fallible function across a layer boundary returns loom::expected<T> (support/expected.hpp)
// holding either a value or an error; exceptions never cross a layer or an actor boundary.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <string_view>

namespace loom {

// What went wrong, in a few kinds a caller can act on. Keep the list short and documented.
enum class errc : std::uint8_t {
  invalid_argument = 1,  // a caller passed a value outside the documented range
  io_error,              // a file could not be read or written; the message names the path
  parse_error,           // a schedule or experiment file is malformed; the message holds located diagnostics
  invalid_schedule,      // a schedule parses but breaks a rule (placement, counts, order, deadlock)
  invalid_experiment,    // an experiment is inconsistent (shapes, parallelism, schedule parameters)
  limit_exceeded,        // a language or resource limit was hit (loop trips, ranks, file size)
  backend_error,         // a kernel backend failed (CUDA error, BLAS failure, no device)
  transport_error,       // the data plane failed (UCX/NCCL error, peer lost)
  timeout,               // a watchdog fired; the message names what was being waited for
  cancelled,             // the work was cancelled by request
  unavailable,           // the feature was not built in or the resource is absent (no GPU, no CUDA)
  internal,              // a broken invariant inside loom: a bug, reported instead of crashing
};

// A short stable name for each code, used in JSON reports and logs ("parse_error").
std::string_view to_string(errc code) noexcept;
std::ostream& operator<<(std::ostream& out, errc code);

struct error {
  errc code = errc::internal;
  std::string message;  // for humans: complete sentence(s), may span lines (located diagnostics)

  error() = default;
  error(errc c, std::string msg) : code(c), message(std::move(msg)) {}

  // "parse_error: schedules/x.sched:3:5: error: ..."
  std::string to_string() const;
};

}  // namespace loom
