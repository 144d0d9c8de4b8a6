// The agent of a daemon that joined a head daemon (loomd --join HEAD --token-file HEAD_TOKEN). It
// registers this host with the head (its name, address and slots) and, while joined, starts and
// stops the `loom worker` processes the head asks for: children of this daemon, each in a session
// of its own, working in STATE/workers/KEY (output in rank-R.log there). It tells the head about
// every worker that ends. When the head goes away (its process dies, or its host or the link falls
// silent for the peer timeout), the agent stops every worker the head started (SIGTERM, SIGKILL after
// the grace period) and tries to join again every few seconds, so a restarted head gets it back.
#pragma once

#include <caf/all.hpp>

#include <chrono>
#include <cstdint>
#include <string>

#include "runtime/daemon/coordinator.hpp"
#include "runtime/daemon/host_protocol.hpp"

namespace loom::daemon {

struct agent_settings {
  std::string head_host;               // the head daemon's address
  std::uint16_t head_port = 0;
  std::string head_token;              // from the head's token file: sent with the join, expected on every request
  host_info self;                      // what this host announces (name, address, slots, version)
  std::string loom_program;            // the `loom` binary the workers run
  std::string workers_dir;             // STATE/workers
  run_priority priority;               // the workers' niceness or SCHED_IDLE
  std::chrono::milliseconds cancel_grace{5000};  // SIGTERM, then SIGKILL after this long
  std::chrono::milliseconds retry{2000};         // between attempts to join
  std::uint64_t internal_key = 0;      // carried by reap and stop, which only this process sends
};

using agent_connect_atom = caf::atom_constant<caf::atom("aconnect")>;
using agent_kill_atom = caf::atom_constant<caf::atom("akill")>;

// The head's requests (host_actor) plus this process's own: reap (a child may have exited),
// connect (try to join), kill (a stopped run's grace is over), stop (the daemon ends: every worker
// is stopped and reaped before the reply).
using agent_actor = host_actor::extend<caf::reacts_to<reap_atom, std::uint64_t>,
                                       caf::reacts_to<agent_connect_atom, std::uint64_t>,
                                       caf::reacts_to<agent_kill_atom, std::uint64_t, std::string>,
                                       caf::replies_to<stop_atom, std::uint64_t, std::string>::with<bool>>;

agent_actor spawn_host_agent(caf::actor_system& sys, agent_settings settings);

// The local address this host uses to reach `host` (what the routing table picks), or "" when it
// cannot tell: a good default for the address a joined daemon announces.
std::string route_address(const std::string& host, std::uint16_t port);

}  // namespace loom::daemon
