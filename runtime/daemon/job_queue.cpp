#include "runtime/daemon/job_queue.hpp"

#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "runtime/daemon/bundle_check.hpp"
#include "runtime/daemon/clock.hpp"
#include "runtime/daemon/supervisor.hpp"
#include "runtime/daemon/worker_launch.hpp"

namespace loom::daemon {

namespace fs = std::filesystem;

namespace {

void note(const std::string& line) { std::cerr << "loomd: " << line << std::endl; }

std::string endpoint_text(const std::string& host, std::uint16_t port) { return endpoint{host, port}.to_string(); }

expected<void> write_file(const fs::path& path, const std::string& text) {
  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  if (ec) return unexpected(errc::io_error, path.parent_path().string() + ": " + ec.message());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return unexpected(errc::io_error, path.string() + ": cannot write");
  return {};
}

}  // namespace

std::string failure_from_log(const std::string& log_path, const std::string& how, const std::string& what) {
  std::ifstream in(log_path, std::ios::binary);
  std::string tail;
  if (in) {
    in.seekg(0, std::ios::end);
    auto size = static_cast<std::streamoff>(in.tellg());
    const std::streamoff keep = 16 << 10;
    in.seekg(size > keep ? size - keep : 0);
    std::stringstream ss;
    ss << in.rdbuf();
    tail = ss.str();
  }
  std::vector<std::string> lines, errors;
  std::istringstream ls(tail);
  for (std::string l; std::getline(ls, l);) {
    if (auto cr = l.rfind('\r'); cr != std::string::npos) l = l.substr(cr + 1);  // progress bars
    if (l.empty()) continue;
    lines.push_back(l);
    if (l.find("error") != std::string::npos) errors.push_back(l);
  }
  const auto& pick = errors.empty() ? lines : errors;
  std::string text;
  for (std::size_t i = pick.size() > 8 ? pick.size() - 8 : 0; i < pick.size(); ++i) text += pick[i] + "\n";
  if (text.size() > 4000) text = "..." + text.substr(text.size() - 4000);
  return what + " " + how + (text.empty() ? "" : ":\n" + text);
}

job_queue::job_queue(std::shared_ptr<store> db, queue_settings settings, remote_hosts remote)
    : db_(std::move(db)), cfg_(std::move(settings)), remote_(std::move(remote)) {
  if (!remote_.table) remote_.table = std::make_shared<host_table>();
}

void job_queue::fill() {
  while (!stopped_ && static_cast<int>(children_.size()) < cfg_.jobs) {
    auto next = db_->next_queued();
    if (!next) {
      note("cannot read the queue: " + next.error().message);
      return;
    }
    if (!*next) return;
    const std::size_t before = children_.size();
    start(**next);
    if (children_.size() == before) {
      // It could not start; it was recorded as failed, so the loop moves on. Guard against a
      // store that refuses every write.
      auto again = db_->next_queued();
      if (!again || (*again && **again == **next)) return;
    }
  }
}

expected<void> job_queue::materialize(std::int64_t id, const std::string& dir) {
  auto sub = db_->submitted(id);
  if (!sub) return forward_error(sub);
  std::error_code ec;
  fs::remove_all(fs::path(dir) / "files", ec);
  fs::remove_all(fs::path(dir) / "out", ec);
  fs::remove(fs::path(dir) / "rendezvous", ec);
  if (auto ok = write_file(fs::path(dir) / "experiment.toml", sub->experiment_text); !ok) return ok;
  for (const auto& f : sub->files)  // names were checked at submit time: relative, no '..'
    if (auto ok = write_file(fs::path(dir) / "files" / f.name, f.contents); !ok) return ok;
  fs::create_directories(fs::path(dir) / "out", ec);
  if (ec) return unexpected(errc::io_error, dir + "/out: " + ec.message());
  return {};
}

void job_queue::start(std::int64_t id) {
  const std::string dir = cfg_.paths.experiment_dir(id);
  const double now = unix_now();
  auto marked = db_->mark_running(id, now, dir + "/out");
  if (!marked) {
    note("experiment " + std::to_string(id) + ": " + marked.error().message);
    return;
  }
  if (!*marked) return;
  auto fail = [&](const std::string& why) {
    note("experiment " + std::to_string(id) + " could not start: " + why);
    (void)db_->finish(id, "running", "failed", unix_now(), "the daemon could not start it: " + why);
  };
  if (auto ok = materialize(id, dir); !ok) return fail(ok.error().message);
  auto sub = db_->submitted(id);
  if (!sub) return fail(sub.error().message);

  std::vector<bool> used(static_cast<std::size_t>(cfg_.jobs), false);
  for (const auto& c : children_) used[static_cast<std::size_t>(c.slot)] = true;
  int slot = 0;
  while (slot < cfg_.jobs && used[static_cast<std::size_t>(slot)]) ++slot;

  child c{id, 0, slot, false, nullptr};
  launch_spec spec;
  spec.program = cfg_.loom_program;
  if (sub->procs > 0) {
    auto planned = plan_spread(id, sub->procs, sub->hosts);
    if (!planned) return fail(planned.error().message);
    c.spread = std::make_shared<spread_run>(std::move(*planned));
    c.spread->port_file = dir + "/rendezvous";
    // Rank 0 listens on any free port and writes it to the port file; tick() then starts the others.
    spec.args = {"worker", dir + "/experiment.toml", "--rank", "0", "--world", std::to_string(sub->procs),
                 "--rendezvous", endpoint_text(cfg_.advertise, 0), "--port-file", c.spread->port_file, "--out", dir + "/out",
                 "--timeout", std::to_string(static_cast<int>(cfg_.join_timeout)), "--peer-timeout",
                 std::to_string(static_cast<int>(cfg_.peer_timeout))};
    spec.cwd = dir;
  } else {
    spec.args = {"run", dir + "/experiment.toml", "--out", dir + "/out"};
  }
  for (const auto& o : run_overrides(*sub, dir + "/files")) {
    spec.args.push_back("--set");
    spec.args.push_back(o);
  }
  spec.log_path = dir + "/log";
  spec.priority = cfg_.priority;
  if (static_cast<std::size_t>(slot) < cfg_.gpu_slots.size()) spec.env.push_back("CUDA_VISIBLE_DEVICES=" + cfg_.gpu_slots[slot]);
  auto pid = launch(spec);
  if (!pid) return fail(pid.error().message);
  if (auto ok = db_->set_pid(id, *pid); !ok) note("experiment " + std::to_string(id) + ": " + ok.error().message);
  c.pid = *pid;
  if (c.spread) {
    const auto& sp = *c.spread;
    for (std::size_t h = 1; h < sp.hosts.size(); ++h)
      if (auto* jh = remote_.table->find(sp.hosts[h])) jh->info.used += ranks_on(sp, static_cast<int>(h));
    append_line(spec.log_path, "loomd: " + placement_text(sp));
  }
  children_.push_back(c);
  note("experiment " + std::to_string(id) + " started (pid " + std::to_string(*pid) + ")" +
       (c.spread ? ", " + std::to_string(c.spread->world) + " processes over " + std::to_string(c.spread->hosts.size()) + " hosts"
                 : std::string()));
}

expected<job_queue::spread_run> job_queue::plan_spread(std::int64_t id, int world, int want_hosts) const {
  if (cfg_.advertise.empty())
    return unexpected(errc::invalid_argument, "a run with --procs needs an address the other hosts reach this daemon at "
                                              "(loomd --host ADDR, or --advertise ADDR with a wildcard --host)");
  std::vector<host_capacity> caps = {{cfg_.host_name, cfg_.slots - local_slots_used()}};
  std::vector<const joined_host*> joined;
  for (const auto& h : remote_.table->hosts()) {
    caps.push_back({h.info.name, h.info.slots - h.info.used});
    joined.push_back(&h);
  }
  auto placed = place_ranks(world, want_hosts, caps);
  if (!placed) return forward_error(placed);
  // Renumber the hosts in use 0..K-1 (0: this one), in the order ranks first land on them.
  spread_run sp;
  sp.key = cfg_.run_prefix + "-" + std::to_string(id);
  sp.world = world;
  std::vector<int> index(caps.size(), -1);
  for (int h : *placed) {
    if (index[static_cast<std::size_t>(h)] >= 0) continue;
    index[static_cast<std::size_t>(h)] = static_cast<int>(sp.hosts.size());
    sp.hosts.push_back(h == 0 ? 0 : joined[static_cast<std::size_t>(h - 1)]->id);
    sp.host_names.push_back(caps[static_cast<std::size_t>(h)].name);
  }
  for (int h : *placed) sp.host_of_rank.push_back(index[static_cast<std::size_t>(h)]);
  return sp;
}

int job_queue::ranks_on(const spread_run& sp, int host) {
  int n = 0;
  for (int h : sp.host_of_rank) n += h == host ? 1 : 0;
  return n;
}

std::string job_queue::placement_text(const spread_run& sp) {
  std::string out = std::to_string(sp.world) + " processes over " + std::to_string(sp.hosts.size()) +
                    (sp.hosts.size() == 1 ? " host:" : " hosts:");
  for (std::size_t h = 0; h < sp.hosts.size(); ++h) {
    std::string ranks;
    for (std::size_t r = 0; r < sp.host_of_rank.size(); ++r)
      if (sp.host_of_rank[r] == static_cast<int>(h)) ranks += (ranks.empty() ? "" : ",") + std::to_string(r);
    out += (h ? "; " : " ") + std::string(ranks.find(',') == std::string::npos ? "rank " : "ranks ") + ranks + " on " +
           sp.host_names[h] + (h == 0 ? " (this daemon)" : "");
  }
  return out;
}

int job_queue::local_slots_used() const {
  int n = 0;
  for (const auto& c : children_)
    if (c.spread && !c.spread->ended) n += ranks_on(*c.spread, 0);
  return n;
}

void job_queue::dispatch(child& c) {
  auto& sp = *c.spread;
  auto where = read_endpoint(sp.port_file);
  if (!where) return;  // rank 0 does not listen yet
  sp.dispatched = true;
  const std::string rendezvous = endpoint_text(cfg_.advertise, where->port);
  const std::string dir = cfg_.paths.experiment_dir(c.id);
  auto abort_run = [&](const std::string& why) {
    if (sp.failure.empty()) sp.failure = why;
    append_line(dir + "/log", "loomd: error: " + why);
    signal_group(c.pid, SIGTERM);
  };
  for (int r = 1; r < sp.world; ++r) {
    if (sp.host_of_rank[static_cast<std::size_t>(r)] != 0) continue;
    worker_launch w{cfg_.loom_program, rendezvous, r, sp.world, cfg_.join_timeout, cfg_.peer_timeout, dir, cfg_.priority};
    auto pid = launch(worker_spec(w));
    if (!pid) return abort_run("rank " + std::to_string(r) + " could not start on " + cfg_.host_name + ": " + pid.error().message);
    sp.locals.push_back({r, *pid});
  }
  for (std::size_t h = 1; h < sp.hosts.size(); ++h) {
    workers_request req;
    req.key = sp.key;
    req.experiment = c.id;
    req.rendezvous = rendezvous;
    req.world = sp.world;
    req.join_timeout = cfg_.join_timeout;
    req.peer_timeout = cfg_.peer_timeout;
    for (int r = 0; r < sp.world; ++r)
      if (sp.host_of_rank[static_cast<std::size_t>(r)] == static_cast<int>(h)) req.ranks.push_back(r);
    if (!remote_.table->find(sp.hosts[h]) || !remote_.start)
      return abort_run("host " + sp.host_names[h] + " left before its ranks could start");
    remote_.start(sp.hosts[h], req);
  }
}

void job_queue::end_spread(child& c) {
  if (!c.spread || c.spread->ended) return;
  auto& sp = *c.spread;
  sp.ended = true;
  const auto deadline = std::chrono::steady_clock::now() + cfg_.cancel_grace;
  for (const auto& w : sp.locals) {
    signal_group(w.pid, SIGTERM);
    stragglers_.push_back({w.pid, deadline});
  }
  sp.locals.clear();
  for (std::size_t h = 1; h < sp.hosts.size(); ++h) {
    auto* jh = remote_.table->find(sp.hosts[h]);
    if (!jh) continue;  // it left; its agent stopped its workers when it lost us
    jh->info.used = std::max(0, jh->info.used - ranks_on(sp, static_cast<int>(h)));
    if (sp.dispatched && remote_.stop) remote_.stop(sp.hosts[h], sp.key);
  }
}

void job_queue::reap_locals() {
  const auto now = std::chrono::steady_clock::now();
  for (auto& c : children_) {
    if (!c.spread) continue;
    auto& locals = c.spread->locals;
    for (std::size_t i = 0; i < locals.size();) {
      if (auto st = poll_exit(locals[i].pid)) {
        signal_group(locals[i].pid, SIGKILL);  // anything it left behind in its group
        if (st->signal != 0 || st->code != 0) {  // a worker that ends well is no news
          const std::string dir = cfg_.paths.experiment_dir(c.id);
          std::string line = "loomd: rank " + std::to_string(locals[i].rank) + " on " + cfg_.host_name + " ended: " + st->describe();
          auto tail = log_tail(dir + "/rank-" + std::to_string(locals[i].rank) + ".log", 4);
          if (!tail.empty()) line += "; its last lines:\n" + tail;
          append_line(dir + "/log", line);
        }
        locals.erase(locals.begin() + static_cast<std::ptrdiff_t>(i));
        continue;
      }
      ++i;
    }
  }
  for (std::size_t i = 0; i < stragglers_.size();) {
    if (poll_exit(stragglers_[i].pid)) {
      signal_group(stragglers_[i].pid, SIGKILL);
      stragglers_.erase(stragglers_.begin() + static_cast<std::ptrdiff_t>(i));
      continue;
    }
    if (now >= stragglers_[i].deadline) signal_group(stragglers_[i].pid, SIGKILL);
    ++i;
  }
}

void job_queue::tick() {
  reap_locals();
  for (auto& c : children_)
    if (c.spread && !c.spread->dispatched && !c.spread->ended && !c.terminating) dispatch(c);
}

bool job_queue::needs_tick() const {
  if (!stragglers_.empty()) return true;
  for (const auto& c : children_)
    if (c.spread && !c.spread->dispatched && !c.spread->ended && !c.terminating) return true;
  return false;
}

void job_queue::remote_failed(const std::string& key, const std::string& why) {
  for (auto& c : children_)
    if (c.spread && c.spread->key == key && !c.spread->ended) {
      if (c.spread->failure.empty()) c.spread->failure = why;
      append_line(cfg_.paths.experiment_dir(c.id) + "/log", "loomd: error: " + why);
      signal_group(c.pid, SIGTERM);
    }
}

void job_queue::worker_exited(const worker_exit& w) {
  for (auto& c : children_)
    if (c.spread && c.spread->key == w.key && !c.spread->ended && w.code != 0) {  // ending well is no news
      std::string line = "loomd: rank " + std::to_string(w.rank) + " on " + w.host + " ended: " + w.how;
      if (!w.log_tail.empty()) line += "; its last lines:\n" + w.log_tail;
      append_line(cfg_.paths.experiment_dir(c.id) + "/log", line);
    }
}

void job_queue::finished(const child& c, const std::string& how, int code) {
  auto row = db_->get(c.id);
  const std::string status = row && *row ? (*row)->status : "";
  if (status == "running") {
    const std::string known = c.spread ? c.spread->failure : "";
    const bool ok = code == 0 && how.find("signal") == std::string::npos && known.empty();
    const std::string log = cfg_.paths.experiment_dir(c.id) + "/log";
    std::string why = known.empty() ? failure_from_log(log, how, c.spread ? "rank 0 (loom worker)" : "loom run") : known;
    auto r = db_->finish(c.id, "running", ok ? "done" : "failed", unix_now(), ok ? "" : why, code);
    if (!r) note("experiment " + std::to_string(c.id) + ": " + r.error().message);
    note("experiment " + std::to_string(c.id) + (ok ? " done" : " failed (" + how + ")"));
  } else {
    (void)db_->set_exit_code(c.id, code);  // cancelled or interrupted before: that stays
    note("experiment " + std::to_string(c.id) + " ended (" + how + ") after it was " + status);
  }
}

void job_queue::poll() {
  reap_locals();
  for (std::size_t i = 0; i < children_.size();) {
    auto& c = children_[i];
    if (auto st = poll_exit(c.pid)) {
      signal_group(c.pid, SIGKILL);  // anything it left behind in its group
      end_spread(c);                 // rank 0 is gone: so is the run
      finished(c, st->describe(), st->signal ? -1 : st->code);
      children_.erase(children_.begin() + static_cast<std::ptrdiff_t>(i));
      continue;
    }
    ++i;
  }
  fill();
}

void job_queue::escalate(std::int64_t id) {
  for (auto& c : children_)
    if (c.id == id && c.terminating) signal_group(c.pid, SIGKILL);
}

bool job_queue::is_running(std::int64_t id) const {
  for (const auto& c : children_)
    if (c.id == id) return true;
  return false;
}

expected<std::string> job_queue::cancel(std::int64_t id) {
  auto row = db_->get(id);
  if (!row) return forward_error(row);
  if (!*row) return unexpected(errc::invalid_argument, "no experiment " + std::to_string(id));
  const std::string status = (*row)->status;
  const double now = unix_now();
  if (status == "queued") {
    auto ok = db_->finish(id, "queued", "cancelled", now, "cancelled by request before it started");
    if (!ok) return forward_error(ok);
    return std::string("experiment " + std::to_string(id) + " cancelled (it had not started)");
  }
  if (status == "running") {
    auto ok = db_->finish(id, "running", "cancelled", now, "cancelled by request while it ran");
    if (!ok) return forward_error(ok);
    for (auto& c : children_)
      if (c.id == id) {
        signal_group(c.pid, SIGTERM);
        c.terminating = true;
        end_spread(c);
      }
    return std::string("experiment " + std::to_string(id) + " cancelled; its run is being stopped");
  }
  return unexpected(errc::invalid_argument, "experiment " + std::to_string(id) + " is already " + status + "; nothing to cancel");
}

void job_queue::stop(const std::string& reason) {
  stopped_ = true;
  const double now = unix_now();
  for (auto& c : children_) {
    (void)db_->finish(c.id, "running", "interrupted", now, reason);
    signal_group(c.pid, SIGTERM);
    end_spread(c);
  }
  const auto until = std::chrono::steady_clock::now() + cfg_.cancel_grace;
  bool killed = false;
  while (!children_.empty() || !stragglers_.empty()) {
    reap_locals();
    for (std::size_t i = 0; i < children_.size();) {
      if (auto st = poll_exit(children_[i].pid)) {
        signal_group(children_[i].pid, SIGKILL);
        end_spread(children_[i]);
        finished(children_[i], st->describe(), st->signal ? -1 : st->code);
        children_.erase(children_.begin() + static_cast<std::ptrdiff_t>(i));
      } else {
        ++i;
      }
    }
    if (!killed && std::chrono::steady_clock::now() >= until) {
      for (auto& c : children_) signal_group(c.pid, SIGKILL);
      for (auto& s : stragglers_) signal_group(s.pid, SIGKILL);
      killed = true;
    }
    if (!children_.empty() || !stragglers_.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace loom::daemon
