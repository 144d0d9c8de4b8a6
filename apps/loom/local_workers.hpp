// Worker processes on this machine for `loom run --procs`: `loom worker` children that die with
// their parent (PR_SET_PDEATHSIG), so no run leaves processes behind.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <vector>

namespace loom::app {

// Starts `loom worker --rendezvous 127.0.0.1:PORT --rank RANK --world WORLD` (this very binary).
pid_t spawn_worker(int rank, int world, std::uint16_t port);

// Waits for the children (a few seconds), then kills any still running and reaps them.
void reap(const std::vector<pid_t>& children);

}  // namespace loom::app
