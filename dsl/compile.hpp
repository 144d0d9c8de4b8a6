// Compiling a schedule file: read it and its imports, parse, evaluate with parameters, and return
// the Schedule IR. Validation (runtime/schedule/validate.hpp) is a separate, later pass.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "runtime/schedule/schedule.hpp"
#include "support/diagnostic.hpp"

namespace loom::dsl {

// Reads an imported file. The command line reads from disk; the daemon only from the files a client
// submitted, so a schedule can never make it open a path of its choosing.
using file_reader = std::function<expected<std::uint32_t>(source_set&, const std::string& path)>;

// Reads from disk, refusing directories and files over the language's size limit.
file_reader disk_reader();

struct compile_request {
  std::string path;                                // the main file (read through the reader)
  std::map<std::string, std::string> set;          // --set NAME=VALUE (integers)
  std::string schedule_name;                       // which schedule of the file; empty: the only one
};

// Compiles; located errors come back rendered in the error's message (errc::parse_error for syntax,
// errc::invalid_schedule for evaluation and requirement failures, errc::limit_exceeded for limits).
// `sources` keeps the files so later passes can print locations in them.
expected<schedule::schedule> compile(source_set& sources, const compile_request& request, const file_reader& read);

// Parses "NAME=VALUE" as given to --set.
expected<std::pair<std::string, std::string>> parse_assignment(const std::string& text);

}  // namespace loom::dsl
