// `loom worker [EXPERIMENT] --rendezvous HOST:PORT [--rank R --world N]`: one rank of a run with one
// process per rank, as mpirun, srun or loomd start it. Rank 0 (which needs the experiment file)
// listens at the rendezvous, runs the coordinator and writes the report; every other rank joins it,
// receives the experiment and runs its rank. Rank and world size come from the flags, else from the
// launcher's environment (OMPI_COMM_WORLD_*, PMI_*, SLURM_PROCID/SLURM_NTASKS, LOOM_RANK/LOOM_WORLD).
// Rank 0 may listen on port 0 (any free one) and write where it listens to --port-file, which is
// how loomd learns the rendezvous of the ranks it starts on other hosts.
#include <iostream>

#include "apps/loom/commands.hpp"
#include "apps/loom/engine.hpp"
#include "apps/loom/run_output.hpp"
#include "apps/loom/schedule_options.hpp"
#include "runtime/cluster/cluster_run.hpp"
#include "runtime/daemon/bundle_collect.hpp"
#include "runtime/daemon/state_dir.hpp"

namespace loom::app {

namespace {

struct worker_options {
  std::string file;
  std::string rendezvous;
  int rank = -1;
  int world = 0;
  std::vector<std::string> set;
  std::string out;
  double timeout = 120;
  double peer_timeout = 15;
  std::string port_file;
  bool quiet = false;
};

int run_worker_command(const worker_options& o) {
  auto [env_rank, env_world] = cluster::launcher_rank();
  const int rank = o.rank >= 0 ? o.rank : env_rank;
  // HOST:PORT or [IPv6]:PORT; port 0 (rank 0 only) listens on any free port.
  std::string text = o.rendezvous;
  const bool any_port = rank == 0 && text.size() > 2 && text.compare(text.size() - 2, 2, ":0") == 0;
  if (any_port) text.back() = '1';
  auto where = daemon::parse_endpoint(text);
  if (!where) {
    std::cerr << "loom: error: --rendezvous: " << where.error().message << "\n";
    return 2;
  }
  cluster::cluster_options co;
  co.host = where->host;
  co.port = any_port ? 0 : where->port;
  co.join_timeout_seconds = o.timeout;
  if (!(o.peer_timeout >= 1)) {
    std::cerr << "loom: error: --peer-timeout must be at least 1 second\n";
    return 2;
  }
  co.peer_timeout_seconds = o.peer_timeout;
  if (rank != 0) {
    if (auto ok = cluster::run_worker(rank, co); !ok) {
      print_error(ok.error());
      return 1;
    }
    return 0;
  }
  if (o.file.empty()) {
    std::cerr << "loom: error: rank 0 needs the experiment file: loom worker EXPERIMENT.toml --rendezvous HOST:PORT\n";
    return 2;
  }
  std::vector<std::string> overrides = o.set;
  if (!o.out.empty()) overrides.push_back("out=" + o.out);
  auto bundle = daemon::collect_submission(o.file, overrides);
  if (!bundle) {
    print_error(bundle.error());
    return 1;
  }
  if (!o.quiet) co.on_step = [](const exec::step_progress& p) { show_progress(p, false); };
  const int world = o.world > 0 ? o.world : env_world;
  co.on_listening = [&](std::uint16_t port) {
    if (!o.port_file.empty())
      if (auto ok = daemon::write_endpoint(o.port_file, {co.host, port}); !ok) print_error(ok.error());
    if (!o.quiet)
      std::cerr << "loom: rank 0 listens on " << co.host << ":" << port << (world > 0 ? " for " + std::to_string(world - 1) + " workers" : "")
                << "\n";
  };
  auto result = cluster::run_rank_zero(*bundle, co);
  if (!result) {
    print_error(result.error());
    return 1;
  }
  if (world > 0 && world != result->run.experiment.pp * result->run.experiment.ep)
    std::cerr << "loom: warning: the launcher started " << world << " processes for " << result->run.experiment.pp * result->run.experiment.ep
              << " ranks\n";
  return finish_run(result->run.experiment, result->run.schedule.sched, result->result);
}

}  // namespace

void add_worker_command(CLI::App& app, action& selected) {
  auto* cmd = app.add_subcommand("worker", engine_about("worker"));
  auto o = std::make_shared<worker_options>();
  cmd->add_option("EXPERIMENT", o->file, "Experiment file (rank 0 only; the others receive it)");
  cmd->add_option("--rendezvous", o->rendezvous, "HOST:PORT where rank 0 listens (rank 0: port 0 picks a free one)")->required();
  cmd->add_option("--rank", o->rank, "This process's rank (default: from the launcher's environment)");
  cmd->add_option("--world", o->world, "Number of processes (default: from the launcher's environment)");
  cmd->add_option("--set", o->set, "Rank 0: override a setting of the experiment (repeatable)")->type_name("KEY=VALUE");
  cmd->add_option("--out", o->out, "Rank 0: output folder");
  cmd->add_option("--timeout", o->timeout, "Seconds to wait for the other ranks at the start")->capture_default_str();
  cmd->add_option("--peer-timeout", o->peer_timeout,
                  "Seconds of silence after which another process of the run counts as gone (the run fails)")
      ->capture_default_str();
  cmd->add_option("--port-file", o->port_file, "Rank 0: write HOST:PORT there once it listens (with port 0: any free port)");
  cmd->add_flag("-q,--quiet", o->quiet, "No progress output");
  cmd->callback([&selected, o] { selected = [o] { return run_worker_command(*o); }; });
}

}  // namespace loom::app
