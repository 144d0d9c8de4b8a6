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

namespace loom::daemon {

namespace fs = std::filesystem;

namespace {

void note(const std::string& line) { std::cerr << "loomd: " << line << std::endl; }

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

std::string failure_from_log(const std::string& log_path, const std::string& how) {
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
  return "loom run " + how + (text.empty() ? "" : ":\n" + text);
}

job_queue::job_queue(std::shared_ptr<store> db, queue_settings settings) : db_(std::move(db)), cfg_(std::move(settings)) {}

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

  launch_spec spec;
  spec.program = cfg_.loom_program;
  spec.args = {"run", dir + "/experiment.toml", "--out", dir + "/out"};
  for (const auto& o : run_overrides(*sub, dir + "/files")) {
    spec.args.push_back("--set");
    spec.args.push_back(o);
  }
  spec.log_path = dir + "/log";
  spec.nice = cfg_.nice;
  if (static_cast<std::size_t>(slot) < cfg_.gpu_slots.size()) spec.env.push_back("CUDA_VISIBLE_DEVICES=" + cfg_.gpu_slots[slot]);
  auto pid = launch(spec);
  if (!pid) return fail(pid.error().message);
  if (auto ok = db_->set_pid(id, *pid); !ok) note("experiment " + std::to_string(id) + ": " + ok.error().message);
  children_.push_back({id, *pid, slot, false});
  note("experiment " + std::to_string(id) + " started (pid " + std::to_string(*pid) + ")");
}

void job_queue::finished(const child& c, const std::string& how, int code) {
  auto row = db_->get(c.id);
  const std::string status = row && *row ? (*row)->status : "";
  if (status == "running") {
    const bool ok = code == 0 && how.find("signal") == std::string::npos;
    const std::string log = cfg_.paths.experiment_dir(c.id) + "/log";
    auto r = db_->finish(c.id, "running", ok ? "done" : "failed", unix_now(), ok ? "" : failure_from_log(log, how), code);
    if (!r) note("experiment " + std::to_string(c.id) + ": " + r.error().message);
    note("experiment " + std::to_string(c.id) + (ok ? " done" : " failed (" + how + ")"));
  } else {
    (void)db_->set_exit_code(c.id, code);  // cancelled or interrupted before: that stays
    note("experiment " + std::to_string(c.id) + " ended (" + how + ") after it was " + status);
  }
}

void job_queue::poll() {
  for (std::size_t i = 0; i < children_.size();) {
    auto& c = children_[i];
    if (auto st = poll_exit(c.pid)) {
      signal_group(c.pid, SIGKILL);  // anything it left behind in its group
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
  }
  const auto until = std::chrono::steady_clock::now() + cfg_.cancel_grace;
  bool killed = false;
  while (!children_.empty()) {
    for (std::size_t i = 0; i < children_.size();) {
      if (auto st = poll_exit(children_[i].pid)) {
        signal_group(children_[i].pid, SIGKILL);
        finished(children_[i], st->describe(), st->signal ? -1 : st->code);
        children_.erase(children_.begin() + static_cast<std::ptrdiff_t>(i));
      } else {
        ++i;
      }
    }
    if (!killed && std::chrono::steady_clock::now() >= until) {
      for (auto& c : children_) signal_group(c.pid, SIGKILL);
      killed = true;
    }
    if (!children_.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace loom::daemon
