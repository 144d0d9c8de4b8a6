// `loom logs ID [-f]`: the output of an experiment's run (progress, losses, errors) as the daemon
// captured it; -f follows it until the experiment ends.
#include <iostream>

#include "apps/loom/commands.hpp"
#include "apps/loom/daemon_client.hpp"

namespace loom::app {

namespace {

struct logs_options {
  std::string id;
  bool follow = false;
  daemon_options daemon;
};

int logs(const logs_options& o) {
  auto id = parse_id(o.id);
  if (!id) return client_error(id.error());
  auto c = daemon_client::connect(o.daemon);
  if (!c) return client_error(c.error());
  if (o.follow) {
    auto final_status = follow_logs(**c, *id, std::cout);
    if (!final_status) return client_error(final_status.error());
    std::cerr << "loom: experiment " << *id << " " << *final_status << "\n";
    return 0;
  }
  std::uint64_t offset = 0;
  for (;;) {
    auto r = (*c)->logs(*id, offset);
    if (!r) return client_error(r.error());
    if (r->text.empty()) {
      if (offset == 0 && r->status == "queued") std::cerr << "loom: experiment " << *id << " is queued: no log yet\n";
      return 0;
    }
    std::cout << r->text;
    offset = r->next;
  }
}

}  // namespace

void add_logs_command(CLI::App& app, action& selected) {
  auto* cmd = app.add_subcommand("logs", "Print an experiment's log (its run's output); -f follows it until it ends");
  auto o = std::make_shared<logs_options>();
  cmd->add_option("ID", o->id, "Experiment id")->required();
  cmd->add_flag("-f,--follow", o->follow, "Keep printing until the experiment ends");
  add_daemon_options(cmd, o->daemon);
  cmd->callback([&selected, o] { selected = [o]() -> int { exit_now(logs(*o)); }; });
}

}  // namespace loom::app
