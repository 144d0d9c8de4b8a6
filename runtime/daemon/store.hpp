// The daemon's durable record of experiments: one SQLite database (WAL, synchronous=FULL) holding
// every submission's files and parameters, its status, timestamps, pid, result folder and error.
// Every call is one committed transaction, so a status change is on disk before the daemon acts on
// it, and a `kill -9` at any moment loses nothing that a call had returned.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/daemon/protocol.hpp"
#include "support/expected.hpp"

namespace loom::daemon {

// A new experiment, as validated at submit time.
struct new_experiment {
  std::string name;                     // the experiment's `name`
  submission files;                     // what the client sent
  double submitted_at = 0;
};

class store {
 public:
  // Opens (creating when needed) the database at `path`.
  static expected<std::unique_ptr<store>> open(const std::string& path);
  ~store();
  store(const store&) = delete;
  store& operator=(const store&) = delete;

  // Adds a queued experiment and returns its id (ids are never reused).
  expected<std::int64_t> insert(const new_experiment& e);

  // One experiment, or every experiment (id order) when `id` is empty.
  expected<std::vector<experiment_info>> list(std::optional<std::int64_t> id = std::nullopt) const;
  expected<std::optional<experiment_info>> get(std::int64_t id) const;
  // The submission as it came (experiment text, overrides, schedule files).
  expected<submission> submitted(std::int64_t id) const;

  // The oldest queued experiment.
  expected<std::optional<std::int64_t>> next_queued() const;
  // The ids in `status`, in id order.
  expected<std::vector<std::int64_t>> with_status(const std::string& status) const;

  // queued -> running, with its start time and result folder; false when it was not queued.
  expected<bool> mark_running(std::int64_t id, double at, const std::string& result_dir);
  expected<void> set_pid(std::int64_t id, std::int64_t pid);
  // Moves to a final state from `from` (the status it must still be in); false when it was not.
  // `exit_code` < -1 leaves the recorded one unchanged.
  expected<bool> finish(std::int64_t id, const std::string& from, const std::string& to, double at,
                        const std::string& error, std::int32_t exit_code = -2);
  // The child of a final experiment has exited: records its exit code.
  expected<void> set_exit_code(std::int64_t id, std::int32_t exit_code);

 private:
  explicit store(sqlite3* db) : db_(db) {}
  expected<void> exec(const char* sql) const;
  sqlite3* db_;
};

// The allowed moves between statuses (the lifecycle in protocol.hpp).
bool allowed_transition(const std::string& from, const std::string& to);

}  // namespace loom::daemon
