// Where a daemon keeps its state, and the small files clients read to find it:
//
//   STATE/experiments.db       the store (SQLite)          STATE/token     the shared secret (0600)
//   STATE/endpoint             "host:port" while it runs   STATE/lock      held by the running daemon
//   STATE/experiments/ID/      experiment.toml, files/ (the schedule bundle), log, out/ (the results)
//   STATE/workers/KEY/         a joined daemon's worker processes of the head's run KEY (rank-R.log)
#pragma once

#include <cstdint>
#include <string>

#include "support/expected.hpp"

namespace loom::daemon {

struct state_paths {
  std::string root;  // absolute
  std::string db, token, endpoint, lock, experiments, workers;
  std::string experiment_dir(std::int64_t id) const;
};
state_paths state_layout(const std::string& root);

// $LOOM_STATE, else ~/.local/state/loom.
std::string default_state_dir();

// Creates the folder and its parents; the folder itself gets mode 0700.
expected<void> make_private_dir(const std::string& path);

// An exclusive lock on STATE/lock, held while the object lives (the kernel drops it when the
// process dies, even by kill -9). Fails when another daemon holds it.
class state_lock {
 public:
  static expected<state_lock> acquire(const std::string& path);
  state_lock(state_lock&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  state_lock& operator=(state_lock&&) = delete;
  ~state_lock();

 private:
  explicit state_lock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

struct endpoint {
  std::string host;
  std::uint16_t port = 0;
  std::string to_string() const;
};
// "host:port" or "[v6addr]:port".
expected<endpoint> parse_endpoint(const std::string& text);
expected<endpoint> read_endpoint(const std::string& path);
// Written to a temporary file and renamed, so a reader never sees half of it.
expected<void> write_endpoint(const std::string& path, const endpoint& e);

// Whether `host` is a loopback address or "localhost".
bool is_loopback(const std::string& host);

}  // namespace loom::daemon
