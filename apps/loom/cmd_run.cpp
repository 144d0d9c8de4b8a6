// `loom run EXP.toml [--set dotted.key=value]... [--out DIR] [--procs N]`: runs an experiment on this
// machine (no daemon), every rank in this process or (--procs) one process per rank, with a progress
// bar, and writes report.json, trace.json and timeline.svg.
#include <cstdio>
#include <iostream>

#include "apps/loom/commands.hpp"
#include "apps/loom/engine.hpp"
#include "apps/loom/local_workers.hpp"
#include "apps/loom/run_output.hpp"
#include "apps/loom/schedule_options.hpp"
#include "dsl/experiment_file.hpp"
#include "runtime/cluster/cluster_run.hpp"
#include "runtime/daemon/bundle_collect.hpp"
#include "runtime/exec/run.hpp"

namespace loom::app {

namespace {

struct run_options {
  std::string file;
  std::vector<std::string> set;
  std::string out;
  bool quiet = false;
  int procs = 0;  // > 0: one process per rank on this machine, over UCX
};

// One process per rank on this machine: this process is rank 0 (the registry and coordinator) and
// starts the others as `loom worker` children, which die with it.
int run_in_processes(const run_options& o, const exec::experiment& e) {
  const int world = e.pp * e.ep;
  if (o.procs != world) {
    std::cerr << "loom: error: --procs " << o.procs << " but the experiment has " << world << " ranks (pp " << e.pp << " x ep " << e.ep
              << ")\n";
    return 2;
  }
  std::vector<std::string> overrides = o.set;
  if (!o.out.empty()) overrides.push_back("out=" + o.out);
  auto bundle = daemon::collect_submission(o.file, overrides);
  if (!bundle) {
    print_error(bundle.error());
    return 1;
  }
  std::vector<pid_t> children;
  cluster::cluster_options co;
  co.host = "127.0.0.1";
  co.port = 0;
  co.join_timeout_seconds = 60;
  const bool timed = e.backend == exec::backend_kind::timed;
  if (!o.quiet) co.on_step = [timed](const exec::step_progress& p) { show_progress(p, timed); };
  co.on_listening = [&](std::uint16_t port) {
    for (int r = 1; r < world; ++r) {
      pid_t pid = spawn_worker(r, world, port);
      if (pid > 0) children.push_back(pid);
    }
  };
  auto result = cluster::run_rank_zero(*bundle, co);
  reap(children);
  if (!result) {
    print_error(result.error());
    return 1;
  }
  return finish_run(result->run.experiment, result->run.schedule.sched, result->result);
}

int run(const run_options& o) {
  std::vector<std::string> overrides = o.set;
  if (!o.out.empty()) overrides.push_back("out=" + o.out);
  auto e = dsl::load_experiment(o.file, overrides);
  if (!e) {
    print_error(e.error());
    return 1;
  }
  dsl::load_request req;
  req.path = e->schedule_file;
  for (const auto& [k, v] : e->schedule_params) req.set[k] = v;
  auto sched = dsl::load_schedule(req);
  if (!sched) {
    std::cerr << o.file << ": schedule " << e->schedule_file << " is not usable:\n";
    print_error(sched.error());
    return 1;
  }
  const auto& s = sched->sched;
  if (!o.quiet)
    std::cerr << "loom: " << e->name << ": " << s.name << " on " << e->pp << " x " << e->ep << " ranks ("
              << exec::to_string(e->backend) << "), " << s.total_microbatches() << " microbatches, " << e->steps << " steps\n";
  if (o.procs > 0) return run_in_processes(o, *e);
  exec::run_options ro;
  const bool timed = e->backend == exec::backend_kind::timed;
  if (!o.quiet) ro.on_step = [timed](const exec::step_progress& p) { show_progress(p, timed); };
  auto result = exec::run_experiment(*e, s, ro);
  if (!result) {
    print_error(result.error());
    return 1;
  }
  return finish_run(*e, s, *result);
}

}  // namespace

void add_run_command(CLI::App& app, action& selected) {
  auto* cmd = app.add_subcommand("run", engine_about("run"));
  auto o = std::make_shared<run_options>();
  cmd->add_option("EXPERIMENT", o->file, "Experiment file (TOML)")->required();
  cmd->add_option("--set", o->set, "Override a setting: dotted.key=value (repeatable), e.g. --set schedule.file=x.sched")
      ->type_name("KEY=VALUE");
  cmd->add_option("--out", o->out, "Output folder (default: the experiment's `out`, or runs/NAME)");
  cmd->add_flag("-q,--quiet", o->quiet, "No progress output");
  cmd->add_option("--procs", o->procs,
                  "Run one process per rank on this machine (must equal pp x ep); data moves over UCX (UCX_TLS picks how)");
  cmd->callback([&selected, o] { selected = [o] { return run(*o); }; });
}

}  // namespace loom::app
