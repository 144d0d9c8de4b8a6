// `loom submit EXP.toml [--set k=v]... [--procs N [--hosts K]] [--wait] [--json]`: sends the
// experiment and every schedule file it needs (contents, not paths) to loomd, which checks them as
// `loom check` would and queues the experiment. Prints its id; --wait follows its log until it ends
// (exit 0 only when done). --procs runs one process per rank, spread over the daemon's host and the
// daemons that joined it (--hosts: over that many of them).
#include <iostream>

#include "apps/loom/commands.hpp"
#include "apps/loom/daemon_client.hpp"
#include "runtime/daemon/bundle_collect.hpp"

namespace loom::app {

namespace {

struct submit_options {
  std::string file;
  std::vector<std::string> set;
  bool wait = false;
  bool json = false;
  int procs = 0;
  int hosts = 0;
  daemon_options daemon;
};

int submit(const submit_options& o) {
  auto sub = daemon::collect_submission(o.file, o.set);
  if (!sub) return client_error(sub.error());
  sub->procs = o.procs;
  sub->hosts = o.hosts;
  auto c = daemon_client::connect(o.daemon);
  if (!c) return client_error(c.error());
  auto r = (*c)->submit(*sub);
  if (!r) return client_error(r.error());
  if (!o.wait) {
    if (o.json) std::cout << "{\"id\": " << r->id << ", \"status\": \"queued\"}\n";
    else std::cout << r->id << "\n";
    if (!o.json) std::cerr << "loom: queued experiment " << r->id << ": " << r->summary << "\n";
    return 0;
  }
  std::cerr << "loom: queued experiment " << r->id << ": " << r->summary << "\n";
  auto final_status = follow_logs(**c, r->id, std::cerr, [&](const std::string& s) {
    std::cerr << "loom: experiment " << r->id << ": " << s << "\n";
  });
  if (!final_status) return client_error(final_status.error());
  auto st = (*c)->status(r->id);
  if (!st) return client_error(st.error());
  const auto& x = st->items.front();
  if (o.json) {
    std::cout << to_json_text(st->items, false) << "\n";
  } else {
    std::cout << r->id << "\n";
    std::cerr << "loom: experiment " << r->id << " " << x.status << (x.error.empty() ? "" : ": " + x.error) << "\n";
    if (x.status == "done") std::cerr << "loom: results: loom results " << r->id << "\n";
  }
  return x.status == "done" ? 0 : 1;
}

}  // namespace

void add_submit_command(CLI::App& app, action& selected) {
  auto* cmd = app.add_subcommand("submit", "Queue an experiment on the daemon (loomd) and print its id");
  auto o = std::make_shared<submit_options>();
  cmd->add_option("EXPERIMENT", o->file, "Experiment file (TOML)")->required();
  cmd->add_option("--set", o->set, "Override a setting: dotted.key=value (repeatable)")->type_name("KEY=VALUE");
  cmd->add_flag("--wait", o->wait, "Follow its progress until it ends; exit status 0 only when it is done");
  cmd->add_flag("--json", o->json, "Print the result as JSON");
  cmd->add_option("--procs", o->procs,
                  "One process per rank (must equal pp x ep), spread round-robin over the daemon's host and the daemons "
                  "that joined it (loomd --join); data moves over UCX");
  cmd->add_option("--hosts", o->hosts, "With --procs: how many hosts to spread the processes over (default: every joined one)");
  add_daemon_options(cmd, o->daemon);
  cmd->callback([&selected, o] { selected = [o]() -> int { exit_now(submit(*o)); }; });
}

}  // namespace loom::app
