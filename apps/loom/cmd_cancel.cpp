// `loom cancel ID`: a queued experiment never starts; a running one is stopped (SIGTERM to its
// process group, SIGKILL after a grace period). Either way its status becomes `cancelled`.
#include <iostream>

#include "apps/loom/commands.hpp"
#include "apps/loom/daemon_client.hpp"

namespace loom::app {

namespace {

struct cancel_options {
  std::string id;
  daemon_options daemon;
};

int cancel(const cancel_options& o) {
  auto id = parse_id(o.id);
  if (!id) return client_error(id.error());
  auto c = daemon_client::connect(o.daemon);
  if (!c) return client_error(c.error());
  auto r = (*c)->cancel(*id);
  if (!r) return client_error(r.error());
  std::cout << r->message << "\n";
  return 0;
}

}  // namespace

void add_cancel_command(CLI::App& app, action& selected) {
  auto* cmd = app.add_subcommand("cancel", "Cancel a queued or running experiment");
  auto o = std::make_shared<cancel_options>();
  cmd->add_option("ID", o->id, "Experiment id")->required();
  add_daemon_options(cmd, o->daemon);
  cmd->callback([&selected, o] { selected = [o]() -> int { exit_now(cancel(*o)); }; });
}

}  // namespace loom::app
