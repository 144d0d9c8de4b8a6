// The queue of experiments and the children that run them. Queued experiments start in id order
// while fewer than `jobs` run; each runs as `loom run STATE/experiments/ID/experiment.toml --out
// .../out` (files materialized from the store) in its own process group, its pid recorded. Every
// status change is committed to the store before it takes effect (before the fork, before a kill).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/daemon/state_dir.hpp"
#include "runtime/daemon/store.hpp"

namespace loom::daemon {

struct queue_settings {
  state_paths paths;
  std::string loom_program;            // the `loom` binary the children run
  int jobs = 1;                        // experiments at once
  std::vector<std::string> gpu_slots;  // when not empty: slot i runs with CUDA_VISIBLE_DEVICES=gpu_slots[i]
  std::chrono::milliseconds cancel_grace{5000};  // SIGTERM, then SIGKILL after this long
  int nice = 0;                        // the runs' niceness, relative to the daemon's
};

class job_queue {
 public:
  job_queue(std::shared_ptr<store> db, queue_settings settings);

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

 private:
  struct child {
    std::int64_t id = 0;
    pid_t pid = 0;
    int slot = 0;
    bool terminating = false;  // SIGTERM sent
  };
  void start(std::int64_t id);
  void finished(const child& c, const std::string& how, int code);
  expected<void> materialize(std::int64_t id, const std::string& dir);

  std::shared_ptr<store> db_;
  queue_settings cfg_;
  std::vector<child> children_;
  bool stopped_ = false;
};

// Why a run failed, from the end of its log: its error lines, else its last lines.
std::string failure_from_log(const std::string& log_path, const std::string& how);

}  // namespace loom::daemon
