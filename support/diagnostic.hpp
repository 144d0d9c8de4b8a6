// Located diagnostics in the compiler style:
//
//   schedules/x.sched:12:7: error: unknown variable 'warmup'
//      12 |   repeat warmup { F 0 }
//         |          ^
//
// A diagnostic_list gathers several independent errors of one run; render() prints them all.
#pragma once

#include <string>
#include <vector>

#include "support/source.hpp"

namespace loom {

enum class severity { error, warning, note };

struct diagnostic {
  severity level = severity::error;
  source_loc loc;
  std::string message;
  std::vector<diagnostic> notes;  // follow-up lines ("note: first defined here")
  bool limit = false;             // a language or resource limit was hit (errc::limit_exceeded)
};

class diagnostic_list {
 public:
  diagnostic& error(source_loc loc, std::string message);
  diagnostic& warning(source_loc loc, std::string message);
  bool has_errors() const { return errors_ > 0; }
  bool hit_limit() const { return limit_; }
  // An error that reports a limit of the language (it makes the whole result errc::limit_exceeded).
  diagnostic& limit_error(source_loc loc, std::string message);
  std::size_t error_count() const { return errors_; }
  const std::vector<diagnostic>& items() const { return items_; }
  // Caps how many errors are kept so a pathological input cannot flood the output.
  bool full() const { return errors_ >= max_errors; }
  static constexpr std::size_t max_errors = 20;

 private:
  std::vector<diagnostic> items_;
  diagnostic overflow_;
  std::size_t errors_ = 0;
  bool limit_ = false;
};

// One diagnostic with its source line and a caret; control bytes in the line are shown as '?', and
// very long lines are cut to a window around the column.
std::string render(const source_set& sources, const diagnostic& d);
// All of them, then "N errors" when there is more than one.
std::string render(const source_set& sources, const diagnostic_list& list);

// Wraps a rendered list into an error of the given code.
loom::error to_error(const source_set& sources, const diagnostic_list& list, errc code = errc::parse_error);

}  // namespace loom
