#include "runtime/daemon/bundle_check.hpp"

#include <filesystem>
#include <map>
#include <set>

#include "dsl/experiment_file.hpp"
#include "dsl/load.hpp"
#include "runtime/exec/run.hpp"
#include "runtime/schedule/limits.hpp"

namespace loom::daemon {

namespace {

namespace fs = std::filesystem;

std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s.substr(0, 120)) out += (c < 0x20 || c == 0x7f) ? '?' : static_cast<char>(c);
  return out + (s.size() > 120 ? "..." : "");
}

// A name the daemon may write under its folder: relative, '/'-separated parts that are neither
// empty, '.' nor '..', of printable characters other than '\\'.
expected<void> check_name(const std::string& name) {
  auto refuse = [&](const std::string& why) {
    return unexpected(errc::invalid_argument, "refused: file name '" + printable(name) + "' " + why);
  };
  if (name.empty()) return refuse("is empty");
  if (name.size() > 1024) return refuse("is longer than 1024 characters");
  if (name.front() == '/') return refuse("is absolute (names are relative to the submitted folder)");
  for (unsigned char c : name)
    if (c < 0x20 || c == 0x7f || c == '\\') return refuse("holds a control character or a backslash");
  std::size_t start = 0;
  while (start <= name.size()) {
    auto slash = name.find('/', start);
    std::string part = name.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (part.empty() || part == "." || part == "..") return refuse("has an empty, '.' or '..' part");
    if (part.size() > 255) return refuse("has a part longer than 255 characters");
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return {};
}

// A TOML basic string, so a file name like "123" or "true" stays a string in a --set override.
std::string toml_quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string mib(std::size_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

}  // namespace

expected<void> check_limits(const submission& s) {
  auto over = [](const std::string& what) { return unexpected(errc::limit_exceeded, "refused: " + what); };
  if (s.experiment_text.size() > max_file_bytes)
    return over("the experiment file is " + std::to_string(s.experiment_text.size()) + " bytes, over the limit of " +
                mib(max_file_bytes));
  if (s.files.size() > max_files)
    return over(std::to_string(s.files.size()) + " schedule files, over the limit of " + std::to_string(max_files));
  if (s.overrides.size() > max_overrides)
    return over(std::to_string(s.overrides.size()) + " --set overrides, over the limit of " + std::to_string(max_overrides));
  std::size_t total = s.experiment_text.size() + s.experiment_name.size();
  for (const auto& o : s.overrides) {
    if (o.size() > 4096) return over("a --set override is longer than 4096 characters");
    total += o.size();
  }
  std::set<std::string> names;
  for (const auto& f : s.files) {
    if (auto ok = check_name(f.name); !ok) return ok;
    if (f.contents.size() > max_file_bytes)
      return over(f.name + " is " + std::to_string(f.contents.size()) + " bytes, over the limit of " + mib(max_file_bytes));
    if (!names.insert(f.name).second) return unexpected(errc::invalid_argument, "refused: " + f.name + " is submitted twice");
    total += f.contents.size() + f.name.size();
  }
  if (total > max_total_bytes)
    return over("the submission holds " + std::to_string(total) + " bytes, over the limit of " + mib(max_total_bytes));
  if (!s.schedule_main.empty()) {
    if (auto ok = check_name(s.schedule_main); !ok) return ok;
    if (!names.count(s.schedule_main))
      return unexpected(errc::invalid_argument, "refused: the schedule file " + s.schedule_main + " is not among the submitted files");
  }
  if (s.experiment_name.size() > 4096) return over("the experiment's name is longer than 4096 characters");
  return {};
}

dsl::file_reader bundle_reader(const submission& s) {
  auto files = std::make_shared<std::map<std::string, std::string>>();
  for (const auto& f : s.files) (*files)[f.name] = f.contents;
  return [files](source_set& sources, const std::string& path) -> expected<std::uint32_t> {
    const fs::path p = fs::path(path).lexically_normal();
    const std::string key = p.generic_string();
    if (p.is_absolute() || key.empty() || key == "." || key.rfind("..", 0) == 0)
      return unexpected(errc::io_error, path + ": cannot open: it lies outside the submitted files (the daemon reads only "
                                               "the files a client sends; import files by relative paths)");
    auto it = files->find(key);
    if (it == files->end())
      return unexpected(errc::io_error, path + ": cannot open: it is not among the submitted files");
    if (it->second.size() > schedule::limits::max_file_bytes)
      return unexpected(errc::limit_exceeded, path + ": file is " + std::to_string(it->second.size()) +
                                                  " bytes, over the limit of " + std::to_string(schedule::limits::max_file_bytes));
    return sources.add(path, it->second);
  };
}

std::vector<std::string> run_overrides(const submission& s, const std::string& files_dir) {
  std::vector<std::string> out = s.overrides;
  const std::string dir = files_dir.empty() ? "." : files_dir;
  out.push_back("schedule.file=" + toml_quote((fs::path(dir) / s.schedule_main).lexically_normal().generic_string()));
  return out;
}

expected<void> check_processes(const submission& s, int pp, int ep) {
  auto refuse = [](const std::string& why) { return unexpected(errc::invalid_argument, "refused: " + why); };
  if (s.procs < 0 || s.hosts < 0) return refuse("--procs and --hosts must not be negative");
  if (s.procs == 0 && s.hosts > 0) return refuse("--hosts spreads the processes of --procs N over hosts: give --procs too");
  if (s.procs > 0 && s.procs != pp * ep)
    return refuse("--procs " + std::to_string(s.procs) + " but the experiment has " + std::to_string(pp * ep) + " ranks (pp " +
                  std::to_string(pp) + " x ep " + std::to_string(ep) + "): one process per rank");
  if (s.hosts > s.procs)
    return refuse("--hosts " + std::to_string(s.hosts) + " is more than the " + std::to_string(s.procs) + " processes");
  return {};
}

expected<validated_submission> validate_submission(const submission& s) {
  if (auto ok = check_limits(s); !ok) return unexpected(ok.error());
  const std::string file = s.experiment_name.empty() ? "experiment.toml" : s.experiment_name;
  std::vector<std::string> overrides = s.overrides;
  if (!s.schedule_main.empty()) overrides = run_overrides(s, "");
  auto e = dsl::parse_experiment(s.experiment_text, file, ".", overrides);
  if (!e) return unexpected(e.error());
  if (s.schedule_main.empty())
    return unexpected(errc::invalid_argument, file + ": refused: the submission holds no schedule file");
  dsl::load_request req;
  req.path = e->schedule_file;
  for (const auto& [k, v] : e->schedule_params) req.set[k] = v;
  auto sched = dsl::load_schedule(req, bundle_reader(s));
  if (!sched) return unexpected(sched.error());
  if (auto ok = exec::check_experiment(*e, sched->sched); !ok) return unexpected(ok.error());
  if (auto ok = check_processes(s, e->pp, e->ep); !ok) return unexpected(ok.error());
  const auto& sc = sched->sched;
  validated_submission out;
  out.summary = e->name + ": schedule " + sc.name + " on " + std::to_string(e->pp) + " x " + std::to_string(e->ep) + " ranks (" +
                exec::to_string(e->backend) + "), " + std::to_string(sc.total_microbatches()) + " microbatches, " +
                std::to_string(e->steps) + (e->steps == 1 ? " step" : " steps");
  if (s.procs > 0)
    out.summary += ", one process per rank" + (s.hosts > 0 ? " over " + std::to_string(s.hosts) + " hosts" : std::string());
  out.experiment = std::move(*e);
  return out;
}

}  // namespace loom::daemon
