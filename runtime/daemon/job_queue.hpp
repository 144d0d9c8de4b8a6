// The queue of experiments and the children that run them. Queued experiments start in id order
// while fewer than `jobs` run; each runs as `loom run STATE/experiments/ID/experiment.toml --out
// .../out` (files materialized from the store) in its own process group, its pid recorded. Every
// status change is committed to the store before it takes effect (before the fork, before a kill).
//
// An experiment submitted with --procs N runs with one process per rank instead: rank 0 is
// `loom worker EXPERIMENT --rank 0 --world N --rendezvous ADDRESS:0 --port-file ...` (its pid is
// the experiment's, its output the experiment's log, its exit status the experiment's end), and
// once it listens, ranks 1..N-1 start round-robin over this host and the daemons that joined it
// (place_ranks): here as children of this daemon, there through their agents. When rank 0 ends,
// for whatever reason, every other rank is stopped (SIGTERM, SIGKILL after the grace period).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/daemon/host_table.hpp"
#include "runtime/daemon/state_dir.hpp"
#include "runtime/daemon/store.hpp"
#include "runtime/daemon/supervisor.hpp"

namespace loom::daemon {

struct queue_settings {
  state_paths paths;
  std::string loom_program;            // the `loom` binary the children run
  int jobs = 1;                        // experiments at once
  std::vector<std::string> gpu_slots;  // when not empty: slot i runs with CUDA_VISIBLE_DEVICES=gpu_slots[i]
  std::chrono::milliseconds cancel_grace{5000};  // SIGTERM, then SIGKILL after this long
  run_priority priority;               // the runs' niceness (relative to the daemon's) or SCHED_IDLE
  // Multi-process runs:
  std::string host_name;               // this host, as logs and `loom hosts` name it
  std::string advertise;               // the address rank 0 listens at (reachable from the joined hosts)
  int slots = 1;                       // worker processes of multi-process runs at once on this host
  double join_timeout = 60;            // seconds for every rank to join rank 0
  double peer_timeout = 15;            // seconds of silence after which a peer process counts as gone
  std::string run_prefix;              // makes run keys unique to this daemon ([A-Za-z0-9-])
};

// How the queue reaches the daemons that joined this one; the coordinator sends over CAF and reports
// a failed start back through job_queue::remote_failed.
struct remote_hosts {
  std::shared_ptr<host_table> table;
  std::function<void(std::uint64_t host, const workers_request&)> start;
  std::function<void(std::uint64_t host, const std::string& key)> stop;
};

class job_queue {
 public:
  job_queue(std::shared_ptr<store> db, queue_settings settings, remote_hosts remote = {});

  // Starts queued experiments while a slot is free (nothing once stopped).
  void fill();
  // Reaps children that exited and records how they ended, then fill().
  void poll();
  // queued -> cancelled; running -> cancelled, then SIGTERM to its group. The message says what happened.
  expected<std::string> cancel(std::int64_t id);
  // A cancelled run still there after the grace period: SIGKILL to its group.
  void escalate(std::int64_t id);
  bool is_running(std::int64_t id) const;
  // Every running experiment -> interrupted (with `reason`), its group stopped (SIGTERM, then SIGKILL
  // after the grace period) and reaped; queued ones stay queued; nothing starts afterwards.
  void stop(const std::string& reason);

  std::size_t running() const { return children_.size(); }

  // Multi-process runs. tick() starts the other ranks of runs whose rank 0 listens now and kills
  // stopped ranks that outlived the grace period; call it while needs_tick().
  void tick();
  bool needs_tick() const;
  // A joined host could not start its ranks of the run `key`: the run fails with `why`.
  void remote_failed(const std::string& key, const std::string& why);
  // A worker process of a run ended on a joined host: noted in the experiment's log.
  void worker_exited(const worker_exit& w);
  // Worker processes of multi-process runs on this host (rank 0 included).
  int local_slots_used() const;

 private:
  struct local_worker {
    int rank = 0;
    pid_t pid = 0;
  };
  // One run with a process per rank.
  struct spread_run {
    std::string key;
    int world = 0;
    std::vector<int> host_of_rank;        // index into `hosts` (0: this host)
    std::vector<std::uint64_t> hosts;     // table ids of the hosts used ([0]: this host, 0)
    std::vector<std::string> host_names;
    std::string port_file;
    bool dispatched = false;              // the other ranks were started
    std::vector<local_worker> locals;     // ranks > 0 on this host, still running
    std::string failure;                  // a reason known before rank 0 ended (wins over its log)
    bool ended = false;                   // the other ranks were told to stop, the slots released
  };
  struct child {
    std::int64_t id = 0;
    pid_t pid = 0;
    int slot = 0;
    bool terminating = false;  // SIGTERM sent
    std::shared_ptr<spread_run> spread;
  };
  // A process of a run that has ended, given until `deadline` to exit before SIGKILL.
  struct straggler {
    pid_t pid = 0;
    std::chrono::steady_clock::time_point deadline;
  };
  void start(std::int64_t id);
  expected<spread_run> plan_spread(std::int64_t id, int world, int want_hosts) const;
  static int ranks_on(const spread_run& sp, int host);
  static std::string placement_text(const spread_run& sp);
  void dispatch(child& c);
  void end_spread(child& c);   // stops every other rank of c's run, releases its slots
  void reap_locals();
  void finished(const child& c, const std::string& how, int code);
  expected<void> materialize(std::int64_t id, const std::string& dir);

  std::shared_ptr<store> db_;
  queue_settings cfg_;
  remote_hosts remote_;
  std::vector<child> children_;
  std::vector<straggler> stragglers_;
  bool stopped_ = false;
};

// Why a run failed, from the end of its log: its error lines, else its last lines ("WHAT HOW:\n...").
std::string failure_from_log(const std::string& log_path, const std::string& how, const std::string& what = "loom run");

}  // namespace loom::daemon
