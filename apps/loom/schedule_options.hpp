// The options every schedule command shares: FILE, --set NAME=VALUE..., --schedule NAME; and the
// loading of the schedule they name, with errors printed the same way everywhere.
#pragma once

#include <CLI/CLI.hpp>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "dsl/load.hpp"

namespace loom::app {

struct schedule_options {
  std::string file;
  std::vector<std::string> set;
  std::string schedule_name;

  void add_to(CLI::App& cmd);
  // Loads and validates; on failure prints the error to stderr and returns nothing.
  std::optional<dsl::loaded_schedule> load(bool validate = true) const;
};

// Prints an error as "loom: <message>" (located diagnostics print as they are) to stderr.
void print_error(const loom::error& e);

// Writes text to a file, or to stdout when path is "-" or empty. Prints and returns false on failure.
bool write_output(const std::string& path, const std::string& text);

}  // namespace loom::app
