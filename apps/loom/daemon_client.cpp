#include "apps/loom/daemon_client.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "runtime/daemon/state_dir.hpp"
#include "runtime/daemon/token.hpp"

namespace loom::app {

namespace {

using namespace loom::daemon;

std::string start_hint() { return "start one with loomd --state DIR"; }

// A plain TCP connect with a deadline: when CAF cannot connect, this says why in words
// ("connection refused", "no answer within 2 s").
expected<void> probe(const endpoint& e, std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const std::string port = std::to_string(e.port);
  if (int rc = ::getaddrinfo(e.host.c_str(), port.c_str(), &hints, &res); rc != 0)
    return unexpected(errc::unavailable, "no daemon at " + e.to_string() + ": cannot resolve " + e.host + ": " + gai_strerror(rc));
  std::string why = "no address";
  for (addrinfo* a = res; a; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    int rc = ::connect(fd, a->ai_addr, a->ai_addrlen);
    int err = rc == 0 ? 0 : errno;
    if (err == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      int n = ::poll(&p, 1, static_cast<int>(timeout.count()));
      if (n == 0) {
        err = ETIMEDOUT;
      } else {
        socklen_t len = sizeof err;
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      }
    }
    ::close(fd);
    if (err == 0) {
      ::freeaddrinfo(res);
      return {};
    }
    why = err == ETIMEDOUT ? "no answer within " + std::to_string(timeout.count() / 1000.0).substr(0, 4) + " s"
                           : std::string(std::strerror(err));
    for (auto& c : why) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  ::freeaddrinfo(res);
  return unexpected(errc::unavailable, "no daemon at " + e.to_string() + ": " + why + "; " + start_hint());
}

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

}  // namespace

void add_daemon_options(CLI::App* cmd, daemon_options& o) {
  cmd->add_option("--daemon", o.daemon, "The daemon, HOST:PORT (default: $LOOM_DAEMON, else the default state's endpoint)")
      ->type_name("HOST:PORT");
  cmd->add_option("--token-file", o.token_file, "The daemon's token file (default: $LOOM_TOKEN_FILE, else STATE/token)")
      ->type_name("FILE");
}

daemon_client_config::daemon_client_config() {
  load<caf::io::middleman>();
  register_protocol_types(*this);
  // A client sends a request and waits: one scheduler thread and no BASP workers keep start-up short.
  set("scheduler.max-threads", 1);
  set("middleman.workers", 0);
  set("logger.console", caf::atom("none"));
  // The daemon drops a connection that stays silent for its peer timeout (15 s by default): a
  // client waiting long for one reply (a large submission) keeps it alive with heartbeats.
  set("middleman.heartbeat-interval", caf::timespan{std::chrono::seconds(1)});
}

daemon_client::~daemon_client() = default;

expected<daemon_client*> daemon_client::connect(const daemon_options& o, std::chrono::milliseconds timeout) {
  const std::string state = default_state_dir();
  std::string addr = o.daemon, addr_from = "--daemon";
  if (addr.empty()) addr = env("LOOM_DAEMON"), addr_from = "LOOM_DAEMON";
  expected<endpoint> ep = endpoint{};
  if (!addr.empty()) {
    ep = parse_endpoint(addr);
    if (!ep) return unexpected(errc::invalid_argument, addr_from + ": " + ep.error().message);
  } else {
    ep = read_endpoint(state_layout(state).endpoint);
    if (!ep)
      return unexpected(errc::unavailable, "no daemon found: " + ep.error().message + "; " + start_hint() +
                                               " (or give --daemon HOST:PORT, or set LOOM_STATE to its state folder)");
  }
  std::string token_file = o.token_file;
  if (token_file.empty()) token_file = env("LOOM_TOKEN_FILE");
  if (token_file.empty()) token_file = state_layout(state).token;
  auto token = read_token(token_file);
  if (!token)
    return unexpected(errc::unavailable, "no token: " + token.error().message +
                                             " (the daemon writes it to STATE/token; give --token-file FILE or set LOOM_TOKEN_FILE)");
  std::unique_ptr<daemon_client> c(new daemon_client());
  c->token_ = *token;
  c->where_ = ep->to_string();
  caf::scoped_actor self{c->sys_};
  std::optional<loom::error> failed;
  self->request(c->sys_.middleman().actor_handle(), timeout, caf::connect_atom::value, ep->host, ep->port)
      .receive(
          [&](const caf::node_id&, caf::strong_actor_ptr& ptr, const std::set<std::string>& ifs) {
            if (!ptr) {
              failed = loom::error(errc::unavailable, "the server at " + c->where_ + " publishes no actor (is it loomd?)");
            } else if (!c->sys_.assignable<daemon_actor>(ifs)) {
              failed = loom::error(errc::unavailable, "the server at " + c->where_ +
                                                          " does not speak this client's protocol (loom and loomd of "
                                                          "different versions?)");
            } else {
              c->handle_ = caf::actor_cast<daemon_actor>(std::move(ptr));
            }
          },
          [&](caf::error& e) {
            // Say why in plain words: a plain TCP connect tells "connection refused" from "no answer".
            if (auto reachable = probe(*ep, std::chrono::milliseconds(2000)); !reachable) {
              failed = reachable.error();
              return;
            }
            std::string why = e == caf::sec::request_timeout ? "no answer within " + std::to_string(timeout.count() / 1000) + " s"
                                                             : c->sys_.render(e);
            failed = loom::error(errc::unavailable, "cannot connect to the daemon at " + c->where_ + ": " + why);
          });
  if (failed) return unexpected(*failed);
  return c.release();
}

template <class Reply, class... Ts>
expected<Reply> daemon_client::call(std::chrono::milliseconds timeout, Ts&&... xs) {
  caf::scoped_actor self{sys_};
  expected<Reply> out = unexpected(errc::internal, "no reply");
  self->request(handle_, timeout, std::forward<Ts>(xs)...)
      .receive(
          [&](Reply& r) {
            if (r.ok) out = std::move(r);
            else out = unexpected(errc::invalid_argument, r.error);
          },
          [&](caf::error& e) {
            std::string why = e == caf::sec::request_timeout ? "no answer within " + std::to_string(timeout.count() / 1000) + " s"
                                                             : sys_.render(e);
            out = unexpected(errc::unavailable, "the daemon at " + where_ + " did not answer: " + why);
          });
  return out;
}

expected<submit_reply> daemon_client::submit(const submission& s) {
  return call<submit_reply>(std::chrono::seconds(120), submit_atom::value, token_, s);
}
expected<status_reply> daemon_client::status(std::int64_t id) {
  return call<status_reply>(std::chrono::seconds(10), status_atom::value, token_, id);
}
expected<logs_reply> daemon_client::logs(std::int64_t id, std::uint64_t offset) {
  return call<logs_reply>(std::chrono::seconds(10), logs_atom::value, token_, id, offset);
}
expected<basic_reply> daemon_client::cancel(std::int64_t id) {
  return call<basic_reply>(std::chrono::seconds(30), cancel_atom::value, token_, id);
}
expected<results_reply> daemon_client::results(std::int64_t id) {
  return call<results_reply>(std::chrono::seconds(30), results_atom::value, token_, id);
}
expected<hosts_reply> daemon_client::hosts() {
  return call<hosts_reply>(std::chrono::seconds(10), hosts_atom::value, token_);
}

expected<std::int64_t> parse_id(const std::string& text) {
  std::string t = text;
  if (!t.empty() && t.front() == '#') t.erase(0, 1);
  if (t.empty() || t.size() > 18 || t.find_first_not_of("0123456789") != std::string::npos || std::stoll(t) <= 0)
    return unexpected(errc::invalid_argument, "'" + text + "' is not an experiment id (a positive number, as `loom submit` printed)");
  return static_cast<std::int64_t>(std::stoll(t));
}

void exit_now(int code) {
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
  ::_exit(code);
}

int client_error(const loom::error& e) {
  const std::string& m = e.message;
  bool located = m.find(": error: ") != std::string::npos || m.find("[error]") != std::string::npos;
  std::cerr << (located ? "" : "loom: error: ") << m << (m.empty() || m.back() != '\n' ? "\n" : "");
  return 1;
}

}  // namespace loom::app

namespace loom::app {

expected<std::string> follow_logs(daemon_client& c, std::int64_t id, std::ostream& out,
                                  const std::function<void(const std::string&)>& on_status) {
  std::uint64_t offset = 0;
  std::string last;
  for (;;) {
    auto r = c.logs(id, offset);
    if (!r) return forward_error(r);
    if (!r->text.empty()) {
      out << r->text << std::flush;
      offset = r->next;
    }
    // The final state is the caller's to report, once the whole log is out.
    if (r->status != last && !daemon::is_final_status(r->status)) {
      last = r->status;
      if (on_status) on_status(last);
    }
    if (!r->text.empty()) continue;  // drain what is there before waiting
    if (daemon::is_final_status(r->status)) return r->status;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

std::string to_json_text(const std::vector<daemon::experiment_info>& items, bool list) {
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& x : items)
    arr.push_back({{"id", x.id},
                   {"name", x.name},
                   {"status", x.status},
                   {"error", x.error},
                   {"file", x.file},
                   {"overrides", x.overrides},
                   {"submitted_at", x.submitted_at},
                   {"started_at", x.started_at},
                   {"finished_at", x.finished_at},
                   {"result_dir", x.result_dir},
                   {"pid", x.pid},
                   {"exit_code", x.exit_code},
                   {"procs", x.procs},
                   {"hosts", x.hosts}});
  if (!list && arr.size() == 1) return arr[0].dump(2);
  return arr.dump(2);
}

}  // namespace loom::app
