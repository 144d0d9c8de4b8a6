#include "runtime/daemon/recovery.hpp"

#include "runtime/daemon/clock.hpp"
#include "runtime/daemon/supervisor.hpp"

namespace loom::daemon {

expected<recovery_report> recover(store& db, const state_paths& paths, double now) {
  recovery_report out;
  // Kill first, then record: once a row says interrupted, nothing of it runs any more.
  out.killed = kill_leftovers(find_runs_under(paths.experiments + "/"));
  out.killed += kill_leftovers(find_runs_under(paths.workers + "/"));  // workers this host ran for a head
  auto running = db.with_status("running");
  if (!running) return forward_error(running);
  const std::string reason = "the daemon stopped while it ran (restarted at " + format_time(now) + ")";
  for (auto id : *running) {
    auto ok = db.finish(id, "running", "interrupted", now, reason);
    if (!ok) return forward_error(ok);
    if (*ok) out.interrupted.push_back(id);
  }
  auto queued = db.with_status("queued");
  if (!queued) return forward_error(queued);
  out.queued = queued->size();
  return out;
}

}  // namespace loom::daemon
