// Talking to loomd from the `loom` client commands (submit, status, logs, cancel, results, list,
// compare, hosts). Where the daemon is: --daemon HOST:PORT and --token-file FILE, else the environment
// (LOOM_DAEMON, LOOM_TOKEN_FILE), else the default state folder ($LOOM_STATE or ~/.local/state/loom:
// its `endpoint` and `token` files). Every request has a timeout; every failure is a sentence.
#pragma once

#include <CLI/CLI.hpp>
#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <chrono>
#include <functional>
#include <iosfwd>
#include <vector>
#include <memory>
#include <string>

#include "runtime/daemon/protocol.hpp"
#include "support/expected.hpp"

namespace loom::app {

struct daemon_options {
  std::string daemon;      // HOST:PORT
  std::string token_file;
};

// Adds --daemon and --token-file to a subcommand.
void add_daemon_options(CLI::App* cmd, daemon_options& o);

class daemon_client_config : public caf::actor_system_config {
 public:
  daemon_client_config();
};

class daemon_client {
 public:
  // Finds and connects to the daemon (the connection is checked for the daemon's interface). The
  // client lives until the process ends: commands finish with exit_now.
  static expected<daemon_client*> connect(const daemon_options& o,
                                                          std::chrono::milliseconds timeout = std::chrono::seconds(10));
  ~daemon_client();

  expected<daemon::submit_reply> submit(const daemon::submission& s);
  expected<daemon::status_reply> status(std::int64_t id);  // 0: every experiment
  expected<daemon::logs_reply> logs(std::int64_t id, std::uint64_t offset);
  expected<daemon::basic_reply> cancel(std::int64_t id);
  expected<daemon::results_reply> results(std::int64_t id);
  expected<daemon::hosts_reply> hosts();  // the daemon and the daemons that joined it

  const std::string& where() const { return where_; }

 private:
  daemon_client() : sys_(cfg_) {}
  template <class Reply, class... Ts>
  expected<Reply> call(std::chrono::milliseconds timeout, Ts&&... xs);

  daemon_client_config cfg_;
  caf::actor_system sys_;
  daemon::daemon_actor handle_;
  std::string token_;
  std::string where_;
};

// Parses an experiment id as given on the command line.
expected<std::int64_t> parse_id(const std::string& text);

// Ends the process at once with `code` after flushing stdout and stderr, without the orderly
// shutdown of the actor system (joining its threads, closing the connection politely): a client
// command is done, and the kernel closes the socket. Keeps `loom status` fast.
[[noreturn]] void exit_now(int code);

// Prints an error the way every client command does ("loom: error: ..." unless it is located).
int client_error(const loom::error& e);

}  // namespace loom::app

namespace loom::app {

// Prints an experiment's log to `out` from the start (or from where `offset` says) until the
// experiment is in a final state and the log is read to its end; `on_status` hears each change
// to a state that is not final. Returns the final status.
expected<std::string> follow_logs(daemon_client& c, std::int64_t id, std::ostream& out,
                                  const std::function<void(const std::string&)>& on_status = {});

// An experiment as JSON (the objects of `loom status --json`).
std::string to_json_text(const std::vector<daemon::experiment_info>& items, bool list);

}  // namespace loom::app
