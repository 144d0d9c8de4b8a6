// The messages of loom's actors, their atoms and their registration. Every type here has an
// `inspect` overload so it can cross a process boundary; tensors never travel in messages (they go
// through the transport).
#pragma once

#include <caf/all.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "actors/transport.hpp"

namespace loom::actors {

// --- atoms (at most 10 characters) ---
using exec_atom = caf::atom_constant<caf::atom("exec")>;        // run one component op
using timer_atom = caf::atom_constant<caf::atom("timer")>;      // a timed op's duration has passed
using arrive_atom = caf::atom_constant<caf::atom("arrive")>;    // a transport payload has arrived
using step_atom = caf::atom_constant<caf::atom("step")>;        // run one schedule step
using sync_atom = caf::atom_constant<caf::atom("sync")>;        // sum gradients across copies
using apply_atom = caf::atom_constant<caf::atom("apply")>;      // optimizer step
using status_atom = caf::atom_constant<caf::atom("status")>;    // what are you waiting for?
using grads_atom = caf::atom_constant<caf::atom("grads")>;      // hand over gradients (tests)
using watch_atom = caf::atom_constant<caf::atom("watch")>;      // watchdog tick
using run_atom = caf::atom_constant<caf::atom("run")>;          // run the whole experiment
using migrate_atom = caf::atom_constant<caf::atom("migrate")>;  // move experts to new slots

// One component operation of a rank's lowered program.
struct op_request {
  std::int32_t index = 0;      // in the rank's op list
  std::uint8_t kind = 0;       // lower::op_kind
  std::int32_t chunk = 0;
  std::int32_t layer = 0;
  std::int32_t microbatch = 0;
  std::int32_t step = 0;
  std::int32_t sms = 0;        // SMs of comm kernels: a comm op's budget; a paired compute op leaves them free
  std::vector<std::int32_t> after;  // cuda backend: ops whose end events this op's stream waits on
};

struct op_result {
  std::int32_t index = 0;
  bool ok = true;
  std::string error;           // when !ok: what failed, for the experiment error
  std::int64_t start_ns = 0;   // since the step began
  std::int64_t end_ns = 0;
  // A communication op's wait for its peers, between its send half and its receive half (both 0: none
  // measured). Nothing of the op runs then: the span is the op's length, the rest is its busy time.
  std::int64_t wait_start_ns = 0;
  std::int64_t wait_end_ns = 0;
};

struct op_timing {
  std::int32_t index = 0;
  std::int64_t start_ns = 0;
  std::int64_t end_ns = 0;
  std::int64_t wait_start_ns = 0;  // as in op_result
  std::int64_t wait_end_ns = 0;
  std::int64_t busy_ns() const { return end_ns - start_ns - (wait_end_ns - wait_start_ns); }
};

// A rank's account of one step.
struct step_report {
  std::int32_t rank = 0;       // global rank
  bool ok = true;
  std::string error;
  double loss_sum = 0;         // cross-entropy summed over the tokens this rank's heads saw
  std::vector<double> load;    // [local chunk][layer][expert] tokens routed, flattened
  std::vector<op_timing> ops;
  std::int64_t peak_bytes = 0; // activations held at the peak of the step
  std::int64_t end_ns = 0;     // when this rank finished its last op
  std::int64_t expert_rows = 0;  // token copies its expert slots processed (forward)
};

// New expert placements for some logical layers: phy2log per layer, slots rank after rank.
struct migrate_request {
  std::vector<std::int32_t> layers;
  std::vector<std::vector<std::int32_t>> phy2log;
};

struct migrate_report {
  std::int32_t rank = 0;
  bool ok = true;
  std::string error;
  std::int64_t bytes_sent = 0;
  std::int64_t experts_moved = 0;  // slots that received an expert from another rank
};

struct sync_report {
  std::int32_t rank = 0;
  bool ok = true;
  std::string error;
  double grad_square = 0;      // over the tensors this rank owns after the sums
};

struct apply_request {
  std::int32_t step = 0;       // counts from 1 for AdamW
  std::vector<double> load;    // [logical layer][expert] summed over the whole step; empty: none
};

// What a rank is doing, for the watchdog: a counter that moves with every finished op, and the op
// it waits on.
struct rank_status {
  std::int32_t rank = 0;
  std::int64_t progress = 0;
  std::int32_t action = -1;    // the action of the op it waits on (-1: none)
  std::string waiting;         // in words
};

struct tensor_dump {
  std::vector<std::string> names;
  std::vector<std::vector<double>> grads;
  std::vector<std::vector<float>> values;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, op_request& x) {
  return f(caf::meta::type_name("loom::op_request"), x.index, x.kind, x.chunk, x.layer, x.microbatch, x.step, x.sms, x.after);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, op_result& x) {
  return f(caf::meta::type_name("loom::op_result"), x.index, x.ok, x.error, x.start_ns, x.end_ns, x.wait_start_ns,
           x.wait_end_ns);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, op_timing& x) {
  return f(caf::meta::type_name("loom::op_timing"), x.index, x.start_ns, x.end_ns, x.wait_start_ns, x.wait_end_ns);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, step_report& x) {
  return f(caf::meta::type_name("loom::step_report"), x.rank, x.ok, x.error, x.loss_sum, x.load, x.ops, x.peak_bytes,
           x.end_ns, x.expert_rows);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, migrate_request& x) {
  return f(caf::meta::type_name("loom::migrate_request"), x.layers, x.phy2log);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, migrate_report& x) {
  return f(caf::meta::type_name("loom::migrate_report"), x.rank, x.ok, x.error, x.bytes_sent, x.experts_moved);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, sync_report& x) {
  return f(caf::meta::type_name("loom::sync_report"), x.rank, x.ok, x.error, x.grad_square);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, apply_request& x) {
  return f(caf::meta::type_name("loom::apply_request"), x.step, x.load);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, rank_status& x) {
  return f(caf::meta::type_name("loom::rank_status"), x.rank, x.progress, x.action, x.waiting);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, tensor_dump& x) {
  return f(caf::meta::type_name("loom::tensor_dump"), x.names, x.grads, x.values);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, payload& x) {
  return f(caf::meta::type_name("loom::payload"), x.f, x.d, x.i);
}

// Adds every type above to a CAF configuration; call it on every node.
void register_message_types(caf::actor_system_config& cfg);

// --- actor interfaces ---

// A component of one chunk: attention, dispatch, MLP or combine.
using component_actor = caf::typed_actor<caf::replies_to<exec_atom, op_request>::with<op_result>,
                                         caf::reacts_to<timer_atom, std::int32_t>,
                                         caf::reacts_to<arrive_atom, std::int32_t, std::vector<payload>>,
                                         caf::reacts_to<arrive_atom, std::int32_t, std::string>>;

// A rank: walks its lowered program each step, then takes part in the gradient sums.
using rank_actor = caf::typed_actor<caf::replies_to<step_atom, std::int32_t>::with<step_report>,
                                    caf::replies_to<sync_atom, std::int32_t>::with<sync_report>,
                                    caf::replies_to<apply_atom, apply_request>::with<bool>,
                                    caf::replies_to<status_atom>::with<rank_status>,
                                    caf::replies_to<grads_atom>::with<tensor_dump>,
                                    caf::reacts_to<arrive_atom, std::int32_t, std::int32_t, payload>,
                                    caf::reacts_to<arrive_atom, std::int32_t, std::int32_t, std::string>,
                                    caf::reacts_to<sync_atom, std::int32_t, std::int32_t, payload>,
                                    caf::reacts_to<sync_atom, std::int32_t, std::int32_t, std::string>,
                                    caf::replies_to<migrate_atom, migrate_request>::with<migrate_report>,
                                    caf::reacts_to<migrate_atom, std::int32_t, std::int32_t, payload>,
                                    caf::reacts_to<migrate_atom, std::int32_t, std::int32_t, std::string>>;

}  // namespace loom::actors

