// What `loom` (the client) and `loomd` (the daemon) say to each other over CAF's io middleman.
//
// Every request carries the daemon's token as its first argument; every reply is a struct with
// `ok` and `error` (errors are values, never exceptions or CAF errors). A submission carries the
// files' contents, never paths: the daemon opens no file a client names. Register the types with
// register_protocol_types on both sides; remote_actor<daemon_actor> checks the interface at connect.
#pragma once

#include <caf/all.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/daemon/host_protocol.hpp"

namespace loom::daemon {

// --- atoms (at most 10 characters) ---
using submit_atom = caf::atom_constant<caf::atom("submit")>;
using status_atom = caf::atom_constant<caf::atom("status")>;
using logs_atom = caf::atom_constant<caf::atom("logs")>;
using cancel_atom = caf::atom_constant<caf::atom("cancel")>;
using results_atom = caf::atom_constant<caf::atom("results")>;

// Caps on what one submission may hold (checked by the daemon before anything is parsed).
inline constexpr std::size_t max_file_bytes = 4u << 20;    // per file, the experiment included
inline constexpr std::size_t max_files = 64;               // schedule files and imports
inline constexpr std::size_t max_total_bytes = 16u << 20;  // all contents together
inline constexpr std::size_t max_overrides = 256;          // --set k=v
inline constexpr std::size_t max_logs_chunk = 256u << 10;  // one logs reply

// The lifecycle of an experiment. Final states never change again.
//   queued -> running -> done | failed | cancelled | interrupted;  queued -> cancelled
inline constexpr const char* status_names[] = {"queued", "running", "done", "failed", "cancelled", "interrupted"};
bool is_final_status(const std::string& s);

struct bundle_file {
  std::string name;      // relative, '/'-separated, no '..' (as the client's files lie relative to each other)
  std::string contents;
};

struct submission {
  std::string experiment_name;          // as the user named the file (for messages only)
  std::string experiment_text;          // the TOML
  std::vector<std::string> overrides;   // "dotted.key=value", applied in order
  std::string schedule_main;            // name in `files` of the experiment's schedule file ("" if unknown)
  std::vector<bundle_file> files;       // the schedule file and every file it imports
  std::int32_t procs = 0;               // > 0: one process per rank (must equal pp x ep), over the joined hosts
  std::int32_t hosts = 0;               // with procs: how many hosts to spread them over (0: as many as there are)
};

// One experiment as the daemon tracks it. Times are Unix seconds; 0 means "not yet".
struct experiment_info {
  std::int64_t id = 0;
  std::string name;          // the experiment's `name`
  std::string file;          // the submitted experiment file's name
  std::string status;        // one of status_names
  std::string error;         // failed, cancelled or interrupted: why
  double submitted_at = 0, started_at = 0, finished_at = 0;
  std::string result_dir;    // on the daemon's machine
  std::int64_t pid = 0;      // of the running child
  std::int32_t exit_code = -1;
  std::vector<std::string> overrides;
  std::int32_t procs = 0;    // as submitted (0: every rank in one process)
  std::int32_t hosts = 0;
};

struct submit_reply {
  bool ok = false;
  std::string error;
  std::int64_t id = 0;
  std::string summary;  // what was accepted, in words
};

struct status_reply {
  bool ok = false;
  std::string error;
  std::vector<experiment_info> items;
};

struct logs_reply {
  bool ok = false;
  std::string error;
  std::string text;            // the log from the requested offset (at most max_logs_chunk)
  std::uint64_t next = 0;      // the offset to ask for next
  std::string status;          // the experiment's status when the text was read
};

struct basic_reply {
  bool ok = false;
  std::string error;
  std::string message;
};

struct results_reply {
  bool ok = false;
  std::string error;
  experiment_info info;
  std::string report_json;     // out/report.json, when the run wrote one
  std::string timeline_svg;    // out/timeline.svg, when the run wrote one
  std::vector<std::string> files;  // what the result folder holds
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, bundle_file& x) {
  return f(caf::meta::type_name("loom::bundle_file"), x.name, x.contents);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, submission& x) {
  return f(caf::meta::type_name("loom::submission"), x.experiment_name, x.experiment_text, x.overrides, x.schedule_main,
           x.files, x.procs, x.hosts);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, experiment_info& x) {
  return f(caf::meta::type_name("loom::experiment_info"), x.id, x.name, x.file, x.status, x.error, x.submitted_at,
           x.started_at, x.finished_at, x.result_dir, x.pid, x.exit_code, x.overrides, x.procs, x.hosts);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, submit_reply& x) {
  return f(caf::meta::type_name("loom::submit_reply"), x.ok, x.error, x.id, x.summary);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, status_reply& x) {
  return f(caf::meta::type_name("loom::status_reply"), x.ok, x.error, x.items);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, logs_reply& x) {
  return f(caf::meta::type_name("loom::logs_reply"), x.ok, x.error, x.text, x.next, x.status);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, basic_reply& x) {
  return f(caf::meta::type_name("loom::basic_reply"), x.ok, x.error, x.message);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, results_reply& x) {
  return f(caf::meta::type_name("loom::results_reply"), x.ok, x.error, x.info, x.report_json, x.timeline_svg, x.files);
}

// The daemon as clients and joined daemons see it. Arguments after the atom: the token, then the
// request's own. An id of 0 in status means "every experiment". host_join and worker_exit come
// from daemons that joined this one (host_protocol.hpp); hosts lists them.
using daemon_actor =
    caf::typed_actor<caf::replies_to<submit_atom, std::string, submission>::with<submit_reply>,
                     caf::replies_to<status_atom, std::string, std::int64_t>::with<status_reply>,
                     caf::replies_to<logs_atom, std::string, std::int64_t, std::uint64_t>::with<logs_reply>,
                     caf::replies_to<cancel_atom, std::string, std::int64_t>::with<basic_reply>,
                     caf::replies_to<results_atom, std::string, std::int64_t>::with<results_reply>,
                     caf::replies_to<hosts_atom, std::string>::with<hosts_reply>,
                     caf::replies_to<host_join_atom, std::string, host_join_request>::with<host_join_reply>,
                     caf::reacts_to<worker_exit_atom, std::string, worker_exit>>;

// Adds every type above to a CAF configuration; call it on the client and on the daemon.
void register_protocol_types(caf::actor_system_config& cfg);

}  // namespace loom::daemon
