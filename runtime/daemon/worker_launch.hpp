// The `loom worker` processes of multi-process runs, as a daemon starts them: the head for its own
// ranks (rank 0 with the experiment, the others joining it), a joined daemon for the ranks the head
// gives it. Each is a child of its daemon in a session of its own (launch()), its output in a log
// of its own, its working folder the run's folder (so a restarted daemon finds leftovers there).
#pragma once

#include <cstddef>
#include <string>

#include "runtime/daemon/supervisor.hpp"

namespace loom::daemon {

struct worker_launch {
  std::string loom_program;    // the `loom` binary
  std::string rendezvous;      // HOST:PORT of rank 0
  int rank = 0;
  int world = 0;
  double join_timeout = 60;    // seconds to wait for rank 0 (and rank 0 for everyone) at the start
  double peer_timeout = 15;    // seconds of silence after which a peer counts as gone
  std::string dir;             // working folder; the log is DIR/rank-R.log
  run_priority priority;
};

// A rank > 0: `loom worker --rendezvous R --rank r --world N --quiet --timeout T --peer-timeout P`.
launch_spec worker_spec(const worker_launch& w);

// The last `lines` lines of a log (at most 2000 characters), for a report of how a process ended.
std::string log_tail(const std::string& path, std::size_t lines);

// Appends one line to a log that a child may be writing too (both append).
void append_line(const std::string& path, const std::string& line);

// A name for a run that is safe in a path: [A-Za-z0-9-] only.
bool safe_key(const std::string& key);

}  // namespace loom::daemon
