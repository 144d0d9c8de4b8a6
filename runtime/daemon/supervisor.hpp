// Child processes of the daemon: each experiment runs as `loom run ...` in a session (and process
// group) of its own, stdout and stderr appended to its log, so a crash in it never touches the
// daemon and the whole group can be signalled at once.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "support/expected.hpp"

namespace loom::daemon {

// How a child yields the CPU to the daemon and its clients (`loom status` stays quick while a run
// keeps every core busy).
struct run_priority {
  int nice = 0;        // added to the child's niceness (0: the daemon's own)
  bool idle = false;   // SCHED_IDLE: the child (and every thread it starts) runs only on CPU time nobody
                       // else wants; stronger than any niceness, since it also preempts at wake-up
};

struct launch_spec {
  std::string program;             // absolute path of the binary
  std::vector<std::string> args;   // argv[1..]
  std::string log_path;            // created (truncated); stdout and stderr go there, appending (so the
                                   // daemon may add lines of its own while the child writes)
  std::string cwd;                 // the child's working folder ("" : the daemon's)
  std::vector<std::string> env;    // "NAME=VALUE" added to (or replacing in) the daemon's environment
  run_priority priority;
};

// fork + setsid + exec; the child's signal mask and SIGPIPE are reset, its other descriptors closed.
expected<pid_t> launch(const launch_spec& spec);

struct exit_status {
  int code = -1;    // exit status, or -1 when killed by a signal
  int signal = 0;   // the signal that killed it
  std::string describe() const;  // "exited with code 1", "killed by signal 9 (Killed)"
};
// Reaps `pid` if it has exited; nothing while it runs.
std::optional<exit_status> poll_exit(pid_t pid);

// Sends `sig` to the process group `pgid` (the child and everything it started).
void signal_group(pid_t pgid, int sig);

// Processes running `loom run FILE...` or `loom worker ...` that belong under `prefix`: an argument
// there (FILE) or their working folder there (left behind by a daemon that was killed: they are
// not our children).
std::vector<pid_t> find_runs_under(const std::string& prefix);
// Kills them (their whole groups) with SIGKILL and waits up to `seconds` for them to be gone.
int kill_leftovers(const std::vector<pid_t>& pids, double seconds = 5);

// The folder of this executable (/proc/self/exe), to find `loom` next to `loomd`.
std::string executable_dir();

}  // namespace loom::daemon
