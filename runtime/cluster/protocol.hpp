// The control plane of a run with one process per rank: what a worker and the registry (in the
// process of rank 0, which also runs the coordinator) say to each other over CAF's io middleman.
//
//   worker -> registry  join:      version, wanted rank;   reply: rank, world size, the experiment
//   worker -> registry  ready:     UCX address, rank actor; reply (once all are ready): every address
//   worker -> registry  connected: data plane up;           reply (once all are): go
//   registry -> worker  finish:    the run is over (also: the registry's node going down)
// Tensors never travel here; they go through the data-plane transport.
#pragma once

#include <caf/all.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "actors/messages.hpp"
#include "runtime/daemon/protocol.hpp"

namespace loom::cluster {

inline constexpr std::int32_t protocol_version = 1;

using join_atom = caf::atom_constant<caf::atom("join")>;
using ready_atom = caf::atom_constant<caf::atom("ready")>;
using connected_atom = caf::atom_constant<caf::atom("connected")>;
using finish_atom = caf::atom_constant<caf::atom("finish")>;

struct join_request {
  std::string version;          // loom's version: workers and registry must run the same build
  std::int32_t protocol = protocol_version;
  std::int32_t rank = -1;       // the rank the launcher gave this process (-1: any)
  std::string host;
  std::int64_t pid = 0;
};

using experiment_bundle = daemon::submission;  // the experiment file, its schedule and imports

struct join_reply {
  bool ok = true;
  std::string error;
  std::int32_t rank = 0;
  std::int32_t world = 1;
  experiment_bundle bundle;
};

struct ready_request {
  std::int32_t rank = 0;
  std::string address;                  // the rank's UCX worker address (bytes)
  actors::rank_actor driver;
  std::vector<caf::actor> components;   // stopped with the rest on failure
  std::vector<std::int32_t> logical_layers;
  std::string host;                     // where the process runs, and its pid: for messages
  std::int64_t pid = 0;
};

struct ready_reply {
  bool ok = true;
  std::string error;
  std::vector<ready_request> ranks;     // every rank's, by rank: addresses for all, handles for rank 0
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, join_request& x) {
  return f(caf::meta::type_name("loom::join_request"), x.version, x.protocol, x.rank, x.host, x.pid);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, join_reply& x) {
  return f(caf::meta::type_name("loom::join_reply"), x.ok, x.error, x.rank, x.world, x.bundle);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, ready_request& x) {
  return f(caf::meta::type_name("loom::ready_request"), x.rank, x.address, x.driver, x.components, x.logical_layers, x.host,
           x.pid);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, ready_reply& x) {
  return f(caf::meta::type_name("loom::ready_reply"), x.ok, x.error, x.ranks);
}

using registry_actor = caf::typed_actor<caf::replies_to<join_atom, join_request>::with<join_reply>,
                                        caf::replies_to<ready_atom, ready_request>::with<ready_reply>,
                                        caf::replies_to<connected_atom, std::int32_t>::with<bool>>;

// Every type of the control plane, the runtime's actor messages included; call on every node.
void register_cluster_types(caf::actor_system_config& cfg);

}  // namespace loom::cluster
