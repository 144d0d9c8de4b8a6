#include "runtime/daemon/host_agent.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <caf/io/all.hpp>

#include <csignal>
#include <iostream>
#include <thread>
#include <vector>

#include "runtime/daemon/state_dir.hpp"
#include "runtime/daemon/supervisor.hpp"
#include "runtime/daemon/token.hpp"
#include "runtime/daemon/worker_launch.hpp"

namespace loom::daemon {

namespace {

void note(const std::string& line) { std::cerr << "loomd: " << line << std::endl; }

struct worker_child {
  std::string key;
  std::int64_t experiment = 0;
  int rank = 0;
  pid_t pid = 0;
  std::string log;
  bool stopping = false;  // told to stop: its end is not news for the head
};

struct agent_state {
  agent_settings cfg;
  daemon_actor head;       // set while joined
  bool connecting = false;
  std::string last_problem;  // said once, not every retry
  std::vector<worker_child> workers;
  bool stopped = false;
  static inline const char* name = "loom.host_agent";
};

using self_ptr = agent_actor::stateful_pointer<agent_state>;

std::string head_text(const agent_settings& c) { return endpoint{c.head_host, c.head_port}.to_string(); }

void retry(self_ptr self, const std::string& problem) {
  auto& st = self->state;
  st.connecting = false;
  if (problem != st.last_problem) note("cannot join the head at " + head_text(st.cfg) + ": " + problem + " (trying again)");
  st.last_problem = problem;
  self->delayed_send(self, st.cfg.retry, agent_connect_atom::value, st.cfg.internal_key);
}

void send_join(self_ptr self) {
  auto& st = self->state;
  host_join_request req{st.cfg.self, caf::actor_cast<host_actor>(self)};
  self->request(st.head, std::chrono::seconds(10), host_join_atom::value, st.cfg.head_token, req)
      .then(
          [self](host_join_reply& r) {
            auto& st = self->state;
            if (!r.ok) {
              st.head = nullptr;
              return retry(self, r.error);
            }
            st.connecting = false;
            st.last_problem.clear();
            self->monitor(st.head);  // its process, host or link gone: stop its workers
            note("joined the head daemon at " + head_text(st.cfg) + " (" + r.head + ") as " + st.cfg.self.name + " with " +
                 std::to_string(st.cfg.self.slots) + " slots");
          },
          [self](caf::error& e) {
            self->state.head = nullptr;
            retry(self, self->system().render(e));
          });
}

void connect(self_ptr self) {
  auto& st = self->state;
  if (st.stopped || st.head || st.connecting) return;
  st.connecting = true;
  auto mm = self->system().middleman().actor_handle();
  self->request(mm, std::chrono::seconds(10), caf::connect_atom::value, st.cfg.head_host, st.cfg.head_port)
      .then(
          [self](const caf::node_id&, caf::strong_actor_ptr& ptr, const std::set<std::string>& ifs) {
            if (!ptr) return retry(self, "the server there publishes no actor (is it loomd?)");
            if (!self->system().assignable<daemon_actor>(ifs))
              return retry(self, "it does not speak this daemon's protocol (loomd of another version?)");
            self->state.head = caf::actor_cast<daemon_actor>(std::move(ptr));
            send_join(self);
          },
          [self](caf::error& e) { retry(self, self->system().render(e)); });
}

// SIGTERM to the workers of `key` (every run when empty), SIGKILL after the grace period.
void stop_workers(self_ptr self, const std::string& key) {
  auto& st = self->state;
  bool any = false;
  for (auto& w : st.workers)
    if ((key.empty() || w.key == key) && !w.stopping) {
      signal_group(w.pid, SIGTERM);
      w.stopping = true;
      any = true;
    }
  if (any) self->delayed_send(self, st.cfg.cancel_grace, agent_kill_atom::value, st.cfg.internal_key, key);
}

void reap(self_ptr self) {
  auto& st = self->state;
  for (std::size_t i = 0; i < st.workers.size();) {
    auto& w = st.workers[i];
    auto ended = poll_exit(w.pid);
    if (!ended) {
      ++i;
      continue;
    }
    signal_group(w.pid, SIGKILL);  // anything it left behind in its group
    if (!w.stopping && st.head) {
      worker_exit x{w.key, w.experiment, w.rank, st.cfg.self.name, ended->signal ? -1 : ended->code, ended->describe(), {}};
      if (ended->signal || ended->code != 0) x.log_tail = log_tail(w.log, 6);
      self->send(st.head, worker_exit_atom::value, st.cfg.head_token, x);
    }
    st.workers.erase(st.workers.begin() + static_cast<std::ptrdiff_t>(i));
  }
}

workers_reply start_workers(self_ptr self, const workers_request& req) {
  auto& st = self->state;
  workers_reply r;
  auto refuse = [&](const std::string& why) {
    r.error = why;
    return r;
  };
  if (st.stopped) return refuse("the daemon is shutting down");
  if (!safe_key(req.key)) return refuse("the run's key is not a safe name");
  if (req.world <= 0 || req.ranks.empty()) return refuse("no ranks to start");
  for (auto rank : req.ranks)
    if (rank <= 0 || rank >= req.world) return refuse("rank " + std::to_string(rank) + " is outside 1.." + std::to_string(req.world - 1));
  if (auto where = parse_endpoint(req.rendezvous); !where) return refuse("the rendezvous " + where.error().message);
  if (!(req.join_timeout > 0 && req.join_timeout <= 86400) || !(req.peer_timeout >= 1 && req.peer_timeout <= 3600))
    return refuse("the timeouts are out of range");
  for (const auto& w : st.workers)
    if (w.key == req.key) return refuse("the run " + req.key + " already has workers here");
  int running = 0;
  for (const auto& w : st.workers) running += w.stopping ? 0 : 1;
  if (running + static_cast<int>(req.ranks.size()) > st.cfg.self.slots)
    return refuse(std::to_string(req.ranks.size()) + " more workers do not fit in " + std::to_string(st.cfg.self.slots) + " slots (" +
                  std::to_string(running) + " taken)");
  const std::string dir = st.cfg.workers_dir + "/" + req.key;
  if (auto ok = make_private_dir(dir); !ok) return refuse(ok.error().message);
  std::vector<worker_child> started;
  for (auto rank : req.ranks) {
    worker_launch w{st.cfg.loom_program, req.rendezvous, rank, req.world, req.join_timeout, req.peer_timeout, dir, st.cfg.priority};
    auto spec = worker_spec(w);
    auto pid = launch(spec);
    if (!pid) {
      for (auto& s : started) signal_group(s.pid, SIGKILL);
      st.workers.insert(st.workers.end(), started.begin(), started.end());  // reaped later
      for (auto& s : st.workers)
        if (s.key == req.key) s.stopping = true;
      return refuse("rank " + std::to_string(rank) + ": " + pid.error().message);
    }
    started.push_back({req.key, req.experiment, rank, *pid, spec.log_path, false});
    r.pids.push_back(*pid);
  }
  std::string ranks;
  for (auto rank : req.ranks) ranks += (ranks.empty() ? "" : ",") + std::to_string(rank);
  note("run " + req.key + " (experiment " + std::to_string(req.experiment) + " of the head): started rank" +
       (req.ranks.size() > 1 ? "s " : " ") + ranks + " of " + std::to_string(req.world) + ", rendezvous " + req.rendezvous);
  st.workers.insert(st.workers.end(), started.begin(), started.end());
  r.ok = true;
  return r;
}

// Stops every worker and waits for them (the daemon is ending).
void stop_all_and_wait(self_ptr self) {
  auto& st = self->state;
  for (auto& w : st.workers) signal_group(w.pid, SIGTERM);
  const auto until = std::chrono::steady_clock::now() + st.cfg.cancel_grace;
  bool killed = false;
  while (!st.workers.empty()) {
    for (std::size_t i = 0; i < st.workers.size();) {
      if (poll_exit(st.workers[i].pid)) {
        signal_group(st.workers[i].pid, SIGKILL);
        st.workers.erase(st.workers.begin() + static_cast<std::ptrdiff_t>(i));
      } else {
        ++i;
      }
    }
    if (!killed && std::chrono::steady_clock::now() >= until) {
      for (auto& w : st.workers) signal_group(w.pid, SIGKILL);
      killed = true;
    }
    if (!st.workers.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

agent_actor::behavior_type agent(self_ptr self, agent_settings cfg) {
  self->state.cfg = std::move(cfg);
  // As the coordinator: anything outside the interface is dropped, and the agent ends only by its
  // own stop message.
  self->set_default_handler(caf::drop);
  self->set_exit_handler([](caf::exit_msg&) {});
  self->set_error_handler([](caf::error&) {});
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    if (!st.head || dm.source != st.head.address()) return;
    st.head = nullptr;
    note("lost the head daemon at " + head_text(st.cfg) + " (" + self->system().render(dm.reason) +
         "): stopping the workers it started; joining again when it is back");
    stop_workers(self, "");
    st.last_problem.clear();
    self->delayed_send(self, st.cfg.retry, agent_connect_atom::value, st.cfg.internal_key);
  });
  self->send(self, agent_connect_atom::value, self->state.cfg.internal_key);
  auto allowed = [self](const std::string& token) { return tokens_equal(self->state.cfg.head_token, token); };
  return {
      [self, allowed](spawn_workers_atom, const std::string& token, const workers_request& req) -> workers_reply {
        if (!allowed(token)) return {false, "refused: the token does not match the head this daemon joined", {}};
        return start_workers(self, req);
      },
      [self, allowed](stop_workers_atom, const std::string& token, const std::string& key) {
        if (!allowed(token) || key.empty()) return;
        stop_workers(self, key);
      },
      [self](reap_atom, std::uint64_t key) {
        if (key == self->state.cfg.internal_key) reap(self);
      },
      [self](agent_connect_atom, std::uint64_t key) {
        if (key == self->state.cfg.internal_key) connect(self);
      },
      [self](agent_kill_atom, std::uint64_t key, const std::string& run) {
        if (key != self->state.cfg.internal_key) return;
        for (auto& w : self->state.workers)
          if ((run.empty() || w.key == run) && w.stopping) signal_group(w.pid, SIGKILL);
      },
      [self](stop_atom, std::uint64_t key, const std::string&) -> bool {
        if (key != self->state.cfg.internal_key) return false;
        self->state.stopped = true;
        stop_all_and_wait(self);
        self->quit();
        return true;
      }};
}

}  // namespace

agent_actor spawn_host_agent(caf::actor_system& sys, agent_settings settings) {
  return sys.spawn(agent, std::move(settings));
}

std::string route_address(const std::string& host, std::uint16_t port) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0) return {};
  std::string out;
  for (addrinfo* a = res; a && out.empty(); a = a->ai_next) {
    int fd = ::socket(a->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    // A UDP connect sends nothing; it only picks the route, and with it the local address.
    sockaddr_storage local{};
    socklen_t len = sizeof local;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0 && ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0) {
      char buf[INET6_ADDRSTRLEN] = {};
      const void* addr = local.ss_family == AF_INET6 ? static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(&local)->sin6_addr)
                                                     : static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(&local)->sin_addr);
      if (::inet_ntop(local.ss_family, addr, buf, sizeof buf)) out = buf;
    }
    ::close(fd);
  }
  ::freeaddrinfo(res);
  return out;
}

}  // namespace loom::daemon
