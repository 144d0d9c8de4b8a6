// What a daemon does on start, before it serves anything: ends what a previous daemon on the same
// state left behind. Any `loom run` or `loom worker` still running from STATE/experiments or
// STATE/workers is killed (its whole process group), and every experiment the store says is
// running becomes `interrupted`, with the reason "the daemon stopped while it ran (restarted at
// TIME)". Queued experiments stay queued.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/daemon/state_dir.hpp"
#include "runtime/daemon/store.hpp"

namespace loom::daemon {

struct recovery_report {
  int killed = 0;                      // leftover processes
  std::vector<std::int64_t> interrupted;
  std::size_t queued = 0;
};

expected<recovery_report> recover(store& db, const state_paths& paths, double now);

}  // namespace loom::daemon
