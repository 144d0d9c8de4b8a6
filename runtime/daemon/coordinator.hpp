// The daemon's coordinator: one actor that answers clients (daemon_actor), keeps the queue and
// supervises the child processes. It validates each submission in a worker actor of its own, so a
// large schedule never delays `status`; it commits every status change to the store before acting
// on it. It reaps its children when told to (loomd's main thread turns SIGCHLD into a reap
// message), so an idle daemon does no work at all. It is also the head of the daemons that join
// it (loomd --join): it keeps their list (host_table), monitors each, and starts and stops the
// worker processes of multi-process runs through them.
#pragma once

#include <caf/all.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/daemon/job_queue.hpp"
#include "runtime/daemon/protocol.hpp"
#include "runtime/daemon/store.hpp"

namespace loom::daemon {

using reap_atom = caf::atom_constant<caf::atom("reap")>;      // a child may have exited
using escalate_atom = caf::atom_constant<caf::atom("escalate")>;  // a cancelled run's grace is over
using stop_atom = caf::atom_constant<caf::atom("stop")>;
using tick_atom = caf::atom_constant<caf::atom("qtick")>;     // multi-process runs: rank 0's port, stragglers

struct daemon_settings {
  queue_settings queue;
  std::string token;
  std::uint64_t internal_key = 0;      // carried by reap, escalate and stop, which only this process knows
};

// The published interface plus the daemon's own messages (reap; escalate with the experiment id;
// stop with the reason the running experiments get). Publish it as daemon_actor: clients see only
// that part (and the internal key keeps a peer from sending the rest).
using coordinator_actor = daemon_actor::extend<caf::reacts_to<reap_atom, std::uint64_t>,
                                               caf::reacts_to<tick_atom, std::uint64_t>,
                                               caf::reacts_to<escalate_atom, std::uint64_t, std::int64_t>,
                                               caf::replies_to<stop_atom, std::uint64_t, std::string>::with<bool>>;

coordinator_actor spawn_coordinator(caf::actor_system& sys, daemon_settings settings, std::shared_ptr<store> db);

}  // namespace loom::daemon
