// The commands that need the runtime's heavy libraries (UCX, OpenBLAS, the CUDA runtime, NCCL) live
// in a second executable, `loom-engine`, next to `loom`. The `loom` users run links none of them, so
// the daemon's clients and the schedule tools start in a few milliseconds; for these commands it
// replaces itself with the engine (same arguments, environment and process id), so exit status,
// output and signals are the engine's own.
#pragma once

#include <string>
#include <string_view>

#include "support/error.hpp"

namespace loom::app {

inline constexpr const char* engine_binary = "loom-engine";

struct engine_command {
  const char* name;
  const char* about;  // the line `loom --help` shows
};

// In the order `loom --help` lists them among the other commands.
inline constexpr engine_command engine_commands[] = {
    {"run", "Run an experiment in this process (no daemon) and write its report"},
    {"worker", "One rank of a run with one process per rank (started by mpirun, srun or loomd)"},
    {"devices", "List the GPUs loom can use (and say why when there are none)"},
};

// The help line of an engine command (name must be one of engine_commands).
const char* engine_about(std::string_view name);
bool is_engine_command(std::string_view arg);

// The engine next to this executable (/proc/self/exe).
std::string engine_path();

// Replaces this process with the engine, passing argv unchanged (argv[0] included, so usage lines
// still say `loom`). Returns only when that fails, with the reason.
loom::error exec_engine(char** argv);

}  // namespace loom::app
