// What `loom` and `loom-engine` (apps/loom/engine.hpp) share at the top of the command line: the
// --version flag, and how a command line becomes an exit status (0, 1, or 2 for usage errors).
#pragma once

#include "apps/loom/commands.hpp"

namespace loom::app {

void add_version_flag(CLI::App& app);

// Parses, then runs the selected command; with none selected, prints the help.
int parse_and_run(CLI::App& app, const action& selected, int argc, char** argv);

}  // namespace loom::app
