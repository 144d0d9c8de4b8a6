// `loom worker [EXPERIMENT] --rendezvous HOST:PORT [--rank R --world N]`: one rank of a run with one
// process per rank, as mpirun, srun or loomd start it. Rank 0 (which needs the experiment file)
// listens at the rendezvous, runs the coordinator and writes the report; every other rank joins it,
// receives the experiment and runs its rank. Rank and world size come from the flags, else from the
// launcher's environment (OMPI_COMM_WORLD_*, PMI_*, SLURM_PROCID/SLURM_NTASKS, LOOM_RANK/LOOM_WORLD).
#include <iostream>

#include "apps/loom/commands.hpp"
#include "apps/loom/run_output.hpp"
#include "apps/loom/schedule_options.hpp"
#include "runtime/cluster/cluster_run.hpp"
#include "runtime/daemon/bundle_collect.hpp"

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
  bool quiet = false;
};

int run_worker_command(const worker_options& o) {
  auto colon = o.rendezvous.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    std::cerr << "loom: error: --rendezvous must be HOST:PORT, not '" << o.rendezvous << "'\n";
    return 2;
  }
  cluster::cluster_options co;
  co.host = o.rendezvous.substr(0, colon);
  try {
    int port = std::stoi(o.rendezvous.substr(colon + 1));
    if (port <= 0 || port > 65535) throw std::out_of_range("port");
    co.port = static_cast<std::uint16_t>(port);
  } catch (const std::exception&) {
    std::cerr << "loom: error: --rendezvous: '" << o.rendezvous.substr(colon + 1) << "' is not a port number\n";
    return 2;
  }
  co.join_timeout_seconds = o.timeout;
  auto [env_rank, env_world] = cluster::launcher_rank();
  const int rank = o.rank >= 0 ? o.rank : env_rank;
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
  auto* cmd = app.add_subcommand("worker", "One rank of a run with one process per rank (started by mpirun, srun or loomd)");
  auto o = std::make_shared<worker_options>();
  cmd->add_option("EXPERIMENT", o->file, "Experiment file (rank 0 only; the others receive it)");
  cmd->add_option("--rendezvous", o->rendezvous, "HOST:PORT where rank 0 listens")->required();
  cmd->add_option("--rank", o->rank, "This process's rank (default: from the launcher's environment)");
  cmd->add_option("--world", o->world, "Number of processes (default: from the launcher's environment)");
  cmd->add_option("--set", o->set, "Rank 0: override a setting of the experiment (repeatable)")->type_name("KEY=VALUE");
  cmd->add_option("--out", o->out, "Rank 0: output folder");
  cmd->add_option("--timeout", o->timeout, "Seconds to wait for the other ranks at the start")->capture_default_str();
  cmd->add_flag("-q,--quiet", o->quiet, "No progress output");
  cmd->callback([&selected, o] { selected = [o] { return run_worker_command(*o); }; });
}

}  // namespace loom::app
