// loomd: the runtime daemon. Keeps a queue of experiments in STATE (a SQLite store that survives
// kill -9), runs each as a `loom run` child process, and answers `loom submit/status/logs/cancel/
// results/list/compare` over CAF's io middleman, on 127.0.0.1 unless told otherwise.
#include <CLI/CLI.hpp>
#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <sys/stat.h>

#include <csignal>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <random>

#include "kernels/gpu_probe.hpp"
#include "loom/version.hpp"
#include "runtime/daemon/clock.hpp"
#include "runtime/daemon/coordinator.hpp"
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
};

class daemon_config : public caf::actor_system_config {
 public:
  daemon_config() {
    load<caf::io::middleman>();
    register_protocol_types(*this);
    set("logger.console", caf::atom("none"));
  }
};

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
  s.queue.jobs = o.jobs;
  if (o.jobs <= 0) {
    auto gpus = loom::kernels::list_gpus();
    s.queue.jobs = 1;
    if (gpus && !gpus->empty()) {  // one experiment per GPU, each seeing only its own
      s.queue.jobs = static_cast<int>(gpus->size());
      for (const auto& g : *gpus) s.queue.gpu_slots.push_back(std::to_string(g.index));
    }
  }
  s.queue.nice = o.nice;
  s.token = *token;
  s.internal_key = random_key();

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

  daemon_config cfg;
  caf::actor_system sys{cfg};
  auto coordinator = spawn_coordinator(sys, s, db);
  auto stop = [&](const std::string& reason) {
    caf::scoped_actor self{sys};
    self->request(coordinator, std::chrono::seconds(60), stop_atom::value, s.internal_key, reason)
        .receive([](bool) {}, [&](caf::error& e) { std::cerr << "loomd: stopping: " << sys.render(e) << "\n"; });
  };
  auto port = caf::io::publish(caf::actor_cast<daemon_actor>(coordinator), static_cast<std::uint16_t>(o.port),
                               o.host.c_str(), true);
  if (!port) {
    stop("the daemon could not start");
    return fail("cannot listen on " + o.host + ":" + std::to_string(o.port) + ": " + sys.render(port.error()));
  }
  const endpoint where{o.host, *port};
  if (auto ok = write_endpoint(paths.endpoint, where); !ok) {
    stop("the daemon could not start");
    return fail(ok.error().message);
  }
  std::cout << "loomd: listening on " << where.to_string() << " (state " << paths.root << ", " << s.queue.jobs
            << (s.queue.jobs == 1 ? " job" : " jobs") << " at once, " << recovered->queued << " queued)" << std::endl;

  // A child that exits raises SIGCHLD: the coordinator reaps it. Signals coalesce, so a reap
  // looks at every child.
  int sig = 0;
  while (sigwait(&signals, &sig) == 0 && sig == SIGCHLD) caf::anon_send(coordinator, reap_atom::value, s.internal_key);
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
  app.add_option("--nice", o.nice,
                 "Niceness of the runs, 0-19: the daemon and its clients stay responsive while experiments use every "
                 "core; it matters only when the CPU is contended")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  return serve(o);
}
