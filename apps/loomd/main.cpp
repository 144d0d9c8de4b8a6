// loomd: the runtime daemon. Keeps a queue of experiments in STATE (a SQLite store that survives
// kill -9), runs each as a `loom run` child process (or, with --procs, as one `loom worker` per rank
// spread over the daemons that joined it), and answers `loom submit/status/logs/cancel/results/
// list/compare/hosts` over CAF's io middleman, on 127.0.0.1 unless told otherwise. With --join it
// also offers this host to a head daemon for the worker processes of its runs.
#include <CLI/CLI.hpp>
#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <optional>
#include <random>
#include <thread>

#include "apps/loom/engine.hpp"
#include "kernels/gpu_probe.hpp"
#include "loom/version.hpp"
#include "runtime/daemon/clock.hpp"
#include "runtime/daemon/coordinator.hpp"
#include "runtime/daemon/gate.hpp"
#include "runtime/daemon/host_agent.hpp"
#include "runtime/daemon/protocol.hpp"
#include "runtime/daemon/recovery.hpp"
#include "runtime/daemon/state_dir.hpp"
#include "runtime/daemon/supervisor.hpp"
#include "runtime/daemon/token.hpp"

namespace {

using namespace loom::daemon;

struct options {
  std::string state = default_state_dir();
  std::string host = "127.0.0.1";
  int port = 4242;
  bool allow_remote = false;
  int jobs = 0;  // 0: one per GPU, else 1
  int nice = 10;
  bool idle = false;
  // Hosts of multi-process runs:
  std::string join;         // HOST:PORT of a head daemon to offer this host to
  std::string token_file;   // the head's token (with --join)
  std::string advertise;    // the address the other hosts reach this one at
  std::string name;         // this host's name in `loom hosts` and logs
  int slots = 0;            // worker processes at once (0: one per core)
  double peer_timeout = 15; // seconds of silence after which a peer (daemon or process) counts as gone
};

class daemon_config : public caf::actor_system_config {
 public:
  explicit daemon_config(double peer_timeout) {
    load<caf::io::middleman>();
    register_protocol_types(*this);
    set("logger.console", caf::atom("none"));
    // No deserialization workers: with them, CAF 0.17.6 sometimes never sends the reply to one of
    // many clients that connect at once (xargs -P 8 loom submit: 1 to 3 of 200 waited out their
    // timeout in half the runs; none in 25 runs without). The multiplexer thread decodes instead.
    set("middleman.workers", 0);
    // A peer that falls silent (its host down, the link cut) is dropped after the peer timeout, so a
    // head notices a joined host is gone and a joined daemon notices the head is (down_msg), also
    // when no TCP reset ever comes. Clients send heartbeats too (daemon_client_config).
    const auto timeout = std::chrono::duration_cast<caf::timespan>(std::chrono::duration<double>(peer_timeout));
    set("middleman.heartbeat-interval", caf::timespan{std::min(timeout / 4, caf::timespan{std::chrono::seconds(1)})});
    set("middleman.connection-timeout", timeout);
  }
};

bool is_wildcard(const std::string& host) { return host.empty() || host == "0.0.0.0" || host == "::"; }

std::string host_name() {
  char buf[256] = {0};
  ::gethostname(buf, sizeof buf - 1);
  return buf;
}

int fail(const std::string& message, int code = 1) {
  std::cerr << "loomd: error: " << message << "\n";
  return code;
}

std::uint64_t random_key() {
  std::random_device rd;
  return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
}

int serve(const options& o) {
  if (o.port < 0 || o.port > 65535) return fail("--port must be 0 (a free port) to 65535", 2);
  if (o.nice < 0 || o.nice > 19) return fail("--nice must be 0 to 19", 2);
  if (o.slots < 0) return fail("--slots must be at least 1 (0: one per core)", 2);
  if (!(o.peer_timeout >= 1 && o.peer_timeout <= 3600)) return fail("--peer-timeout must be 1 to 3600 seconds", 2);
  std::optional<endpoint> head;
  std::string head_token;
  if (!o.join.empty()) {
    auto e = parse_endpoint(o.join);
    if (!e) return fail("--join: " + e.error().message, 2);
    head = *e;
    std::string file = o.token_file;
    if (file.empty()) file = std::getenv("LOOM_TOKEN_FILE") ? std::getenv("LOOM_TOKEN_FILE") : "";
    if (file.empty()) return fail("--join needs the head daemon's token: --token-file FILE (a copy of the head's STATE/token)", 2);
    auto t = read_token(file);
    if (!t) return fail(t.error().message, 2);
    head_token = *t;
  }
  if (!is_loopback(o.host) && !o.allow_remote)
    return fail("refusing to listen on " + o.host + ": only loopback addresses without --allow-remote (the protocol is "
                "not encrypted; anyone who can reach the port and has the token controls the daemon)", 2);
  ::umask(077);  // the store, the logs and the results are for the daemon's user only
  const state_paths paths = state_layout(o.state);
  if (auto ok = make_private_dir(paths.root); !ok) return fail(ok.error().message);
  if (auto ok = make_private_dir(paths.experiments); !ok) return fail(ok.error().message);
  auto lock = state_lock::acquire(paths.lock);
  if (!lock) return fail(lock.error().message);
  std::string warning;
  auto token = load_or_create_token(paths.token, &warning);
  if (!token) return fail(token.error().message);
  if (!warning.empty()) std::cerr << "loomd: warning: " << warning << "\n";
  auto opened = store::open(paths.db);
  if (!opened) return fail(opened.error().message);
  std::shared_ptr<store> db = std::move(*opened);

  auto recovered = recover(*db, paths, unix_now());
  if (!recovered) return fail(recovered.error().message);
  if (recovered->killed > 0) std::cerr << "loomd: killed " << recovered->killed << " leftover run(s) of a previous daemon\n";
  for (auto id : recovered->interrupted) std::cerr << "loomd: experiment " << id << " was running when the daemon stopped: interrupted\n";

  daemon_settings s;
  s.queue.paths = paths;
  s.queue.loom_program = executable_dir() + "/loom";
  if (::access(s.queue.loom_program.c_str(), X_OK) != 0)
    return fail(s.queue.loom_program + ": no loom binary next to loomd (it runs the experiments)");
  // `loom run` and `loom worker` are loom-engine's: refuse to start rather than fail every run.
  if (const std::string engine = executable_dir() + "/" + loom::app::engine_binary; ::access(engine.c_str(), X_OK) != 0)
    return fail(engine + ": no " + loom::app::engine_binary + " next to loomd (`loom run` and `loom worker` run in it)");
  s.queue.jobs = o.jobs;
  if (o.jobs <= 0) {
    auto gpus = loom::kernels::list_gpus();
    s.queue.jobs = 1;
    if (gpus && !gpus->empty()) {  // one experiment per GPU, each seeing only its own
      s.queue.jobs = static_cast<int>(gpus->size());
      for (const auto& g : *gpus) s.queue.gpu_slots.push_back(std::to_string(g.index));
    }
  }
  s.queue.priority = {o.nice, o.idle};
  s.queue.host_name = o.name.empty() ? host_name() : o.name;
  s.queue.advertise = !o.advertise.empty() ? o.advertise : is_wildcard(o.host) ? "" : o.host;
  s.queue.slots = o.slots > 0 ? o.slots : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  s.queue.peer_timeout = o.peer_timeout;
  s.token = *token;
  s.internal_key = random_key();
  {
    char prefix[16];
    std::snprintf(prefix, sizeof prefix, "%08x", static_cast<unsigned>(random_key()));
    s.queue.run_prefix = prefix;  // run keys stay unique across restarts of this daemon
  }

  // SIGTERM, SIGINT, SIGHUP and SIGCHLD are taken by sigwait below (every thread CAF starts
  // inherits the mask; children get theirs reset).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  sigaddset(&signals, SIGCHLD);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  daemon_config cfg{o.peer_timeout};
  caf::actor_system sys{cfg};
  auto coordinator = spawn_coordinator(sys, s, db);
  std::optional<agent_actor> agent;
  auto stop = [&](const std::string& reason) {
    caf::scoped_actor self{sys};
    if (agent)  // the workers this host runs for the head first: they are not in the queue
      self->request(*agent, std::chrono::seconds(60), stop_atom::value, s.internal_key, reason)
          .receive([](bool) {}, [&](caf::error& e) { std::cerr << "loomd: stopping the workers: " << sys.render(e) << "\n"; });
    self->request(coordinator, std::chrono::seconds(60), stop_atom::value, s.internal_key, reason)
        .receive([](bool) {}, [&](caf::error& e) { std::cerr << "loomd: stopping: " << sys.render(e) << "\n"; });
  };
  // The middleman listens on a loopback port of its own; clients reach it through the gate, which
  // keeps oversized messages away from it (gate.hpp).
  auto backend_port = caf::io::publish(caf::actor_cast<daemon_actor>(coordinator), 0, "127.0.0.1", true);
  if (!backend_port) {
    stop("the daemon could not start");
    return fail("cannot listen on 127.0.0.1: " + sys.render(backend_port.error()));
  }
  gate_settings gs;
  gs.host = o.host;
  gs.port = static_cast<std::uint16_t>(o.port);
  gs.backend_port = *backend_port;
  gs.log = [](const std::string& line) { std::cout << line << std::endl; };
  auto front = gate::open(std::move(gs));
  if (!front) {
    stop("the daemon could not start");
    return fail(front.error().message);
  }
  const endpoint where{o.host, (*front)->port()};
  if (auto ok = write_endpoint(paths.endpoint, where); !ok) {
    stop("the daemon could not start");
    return fail(ok.error().message);
  }
  std::cout << "loomd: listening on " << where.to_string() << " (state " << paths.root << ", " << s.queue.jobs
            << (s.queue.jobs == 1 ? " job" : " jobs") << " at once, " << recovered->queued << " queued, " << s.queue.slots
            << " worker slots)" << std::endl;
  if (head) {
    if (auto ok = make_private_dir(paths.workers); !ok) {
      stop("the daemon could not start");
      return fail(ok.error().message);
    }
    agent_settings a;
    a.head_host = head->host;
    a.head_port = head->port;
    a.head_token = head_token;
    a.self.name = s.queue.host_name;
    a.self.address = !s.queue.advertise.empty() ? s.queue.advertise : route_address(head->host, head->port);
    a.self.version = loom::version;
    a.self.slots = s.queue.slots;
    a.loom_program = s.queue.loom_program;
    a.workers_dir = paths.workers;
    a.priority = s.queue.priority;
    a.cancel_grace = s.queue.cancel_grace;
    a.internal_key = s.internal_key;
    agent = spawn_host_agent(sys, a);
    std::cout << "loomd: joining the head daemon at " << head->to_string() << " as " << a.self.name << " (" << a.self.address
              << ")" << std::endl;
  }

  // A child that exits raises SIGCHLD: the coordinator (and the agent, for the workers it runs)
  // reaps it. Signals coalesce, so a reap looks at every child.
  int sig = 0;
  while (sigwait(&signals, &sig) == 0 && sig == SIGCHLD) {
    caf::anon_send(coordinator, reap_atom::value, s.internal_key);
    if (agent) caf::anon_send(*agent, reap_atom::value, s.internal_key);
  }
  const std::string name = sig == SIGINT ? "SIGINT" : sig == SIGHUP ? "SIGHUP" : "SIGTERM";
  std::cout << "loomd: " << name << ": stopping (queued experiments stay queued)" << std::endl;
  std::error_code ec;
  std::filesystem::remove(paths.endpoint, ec);
  stop("the daemon was stopped (" + name + ") while it ran");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"loomd: the loom runtime daemon (queues experiments, runs each in a child process, keeps their results)"};
  app.set_version_flag("--version", std::string("loomd ") + loom::version);
  options o;
  app.add_option("--state", o.state, "State folder: the experiment store, token, endpoint and results")
      ->capture_default_str();
  app.add_option("--host", o.host, "Address to listen on (loopback unless --allow-remote)")->capture_default_str();
  app.add_option("--port", o.port, "TCP port; 0 picks a free one (see STATE/endpoint)")->capture_default_str();
  app.add_flag("--allow-remote", o.allow_remote, "Allow a non-loopback --host (the protocol is not encrypted)");
  app.add_option("--jobs", o.jobs, "Experiments at once (default: one per GPU, 1 without GPUs)");
  app.add_option("--join", o.join, "Offer this host to the head daemon at HOST:PORT for the worker processes of its runs")
      ->type_name("HOST:PORT");
  app.add_option("--token-file", o.token_file, "With --join: the head daemon's token file (default $LOOM_TOKEN_FILE)")
      ->type_name("FILE");
  app.add_option("--advertise", o.advertise,
                 "The address other hosts reach this one at (default: --host, or with --join the address that routes to the head)");
  app.add_option("--name", o.name, "This host's name in `loom hosts` and the logs (default: the host name)");
  app.add_option("--slots", o.slots, "Worker processes of multi-process runs at once on this host (default: one per core)");
  app.add_option("--peer-timeout", o.peer_timeout,
                 "Seconds of silence after which a joined daemon, the head, or a process of a run counts as gone")
      ->capture_default_str();
  app.add_option("--nice", o.nice,
                 "Niceness of the runs, 0-19: the daemon and its clients stay responsive while experiments use every "
                 "core; it matters only when the CPU is contended")
      ->capture_default_str();
  app.add_flag("--idle", o.idle,
               "Run experiments under SCHED_IDLE: they get only CPU time that nothing else wants, which keeps "
               "`loom status` quickest on a busy machine but lets any other program slow a run down");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  return serve(o);
}
