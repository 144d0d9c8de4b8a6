// What daemons say to each other. A daemon started with `loomd --join HEAD` registers with the head
// daemon as a worker host (host_join, with the head's token); the head keeps it in its list while
// the connection lives (it monitors the joined daemon's agent), asks it to start the `loom worker`
// processes of multi-process runs (spawn_workers) and to stop them (stop_workers), and hears when
// one of them ends (worker_exit). Every request carries the head's token; the agent accepts only
// the token it joined with. Register the types with register_protocol_types on every side.
#pragma once

#include <caf/all.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace loom::daemon {

using host_join_atom = caf::atom_constant<caf::atom("hjoin")>;
using hosts_atom = caf::atom_constant<caf::atom("hosts")>;
using worker_exit_atom = caf::atom_constant<caf::atom("wexit")>;
using spawn_workers_atom = caf::atom_constant<caf::atom("wstart")>;
using stop_workers_atom = caf::atom_constant<caf::atom("wstop")>;

// A daemon as a host of worker processes.
struct host_info {
  std::string name;        // its host name
  std::string address;     // where the other hosts reach it (informational: workers connect out)
  std::string version;     // loom's version: every host of a run must run the same build
  std::int32_t slots = 0;  // worker processes it runs at once
  std::int32_t used = 0;   // (as the head counts) taken by running experiments
  double joined_at = 0;    // Unix seconds
};

// Start ranks of one run: `loom worker --rendezvous RENDEZVOUS --rank R --world WORLD` for each R.
struct workers_request {
  std::string key;                  // names the run on every host ([A-Za-z0-9-], unique per head and experiment)
  std::int64_t experiment = 0;      // the head's experiment id (for logs)
  std::string rendezvous;           // HOST:PORT where rank 0 listens
  std::int32_t world = 0;
  std::vector<std::int32_t> ranks;
  double join_timeout = 60;         // seconds a worker waits for rank 0 at the start
  double peer_timeout = 15;         // seconds of silence after which a peer counts as gone
};

struct workers_reply {
  bool ok = false;
  std::string error;
  std::vector<std::int64_t> pids;   // by rank, as in the request
};

// One worker process of a run has ended (sent by the agent that started it).
struct worker_exit {
  std::string key;
  std::int64_t experiment = 0;
  std::int32_t rank = 0;
  std::string host;
  std::int32_t code = -1;      // exit status, -1 when a signal ended it
  std::string how;             // "exited with code 1", "killed by signal 9 (Killed)"
  std::string log_tail;        // the last lines of its output
};

// The joined daemon's side: the head's requests.
using host_actor = caf::typed_actor<caf::replies_to<spawn_workers_atom, std::string, workers_request>::with<workers_reply>,
                                    caf::reacts_to<stop_workers_atom, std::string, std::string>>;

struct host_join_request {
  host_info host;
  host_actor agent;            // where the head sends its requests; monitored by the head
};

struct host_join_reply {
  bool ok = false;
  std::string error;
  std::string head;            // the head's host name
};

struct hosts_reply {
  bool ok = false;
  std::string error;
  host_info head;              // the daemon asked
  std::vector<host_info> hosts;  // the daemons that joined it, in join order
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, host_info& x) {
  return f(caf::meta::type_name("loom::host_info"), x.name, x.address, x.version, x.slots, x.used, x.joined_at);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, workers_request& x) {
  return f(caf::meta::type_name("loom::workers_request"), x.key, x.experiment, x.rendezvous, x.world, x.ranks, x.join_timeout,
           x.peer_timeout);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, workers_reply& x) {
  return f(caf::meta::type_name("loom::workers_reply"), x.ok, x.error, x.pids);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, worker_exit& x) {
  return f(caf::meta::type_name("loom::worker_exit"), x.key, x.experiment, x.rank, x.host, x.code, x.how, x.log_tail);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, host_join_request& x) {
  return f(caf::meta::type_name("loom::host_join_request"), x.host, x.agent);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, host_join_reply& x) {
  return f(caf::meta::type_name("loom::host_join_reply"), x.ok, x.error, x.head);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, hosts_reply& x) {
  return f(caf::meta::type_name("loom::hosts_reply"), x.ok, x.error, x.head, x.hosts);
}

}  // namespace loom::daemon
