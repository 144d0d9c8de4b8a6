#include "runtime/daemon/bundle_collect.hpp"

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "dsl/experiment_file.hpp"
#include "dsl/load.hpp"
#include "runtime/schedule/limits.hpp"

namespace loom::daemon {

namespace {

namespace fs = std::filesystem;

fs::path absolute_normal(const std::string& p) {
  std::error_code ec;
  fs::path a = fs::absolute(p, ec);
  return (ec ? fs::path(p) : a).lexically_normal();
}

// The deepest folder holding every path.
fs::path common_folder(const std::vector<fs::path>& paths) {
  fs::path root = paths.front().parent_path();
  for (const auto& p : paths) {
    fs::path dir = p.parent_path();
    fs::path common;
    auto a = root.begin(), b = dir.begin();
    for (; a != root.end() && b != dir.end() && *a == *b; ++a, ++b) common /= *a;
    root = common;
  }
  return root;
}

}  // namespace

expected<submission> collect_submission(const std::string& experiment_path, const std::vector<std::string>& overrides) {
  submission out;
  out.experiment_name = experiment_path;
  out.overrides = overrides;
  {
    std::error_code ec;
    if (fs::is_directory(experiment_path, ec))
      return unexpected(errc::io_error, experiment_path + ": is a directory, not a file");
    std::ifstream in(experiment_path, std::ios::binary);
    if (!in) return unexpected(errc::io_error, experiment_path + ": cannot open the experiment file");
    auto size = fs::file_size(experiment_path, ec);
    if (!ec && size > max_file_bytes)
      return unexpected(errc::limit_exceeded, experiment_path + ": the experiment file is over " + std::to_string(max_file_bytes) + " bytes");
    std::stringstream ss;
    ss << in.rdbuf();
    out.experiment_text = ss.str();
  }
  // A file that does not parse is sent as it is: the daemon refuses it with the located error.
  auto e = dsl::load_experiment(experiment_path, overrides);
  if (!e) return out;

  // Compile locally through a reader that remembers every file it read: that is the import closure.
  std::vector<std::pair<std::string, std::string>> read;  // path as the compiler named it, contents
  std::string missing;
  dsl::file_reader disk = dsl::disk_reader();
  dsl::file_reader recorder = [&](source_set& sources, const std::string& path) -> expected<std::uint32_t> {
    auto id = disk(sources, path);
    if (id) read.emplace_back(path, sources.file(*id).text);
    else if (missing.empty()) missing = id.error().message;
    return id;
  };
  dsl::load_request req;
  req.path = e->schedule_file;
  req.validate = false;  // the daemon validates
  for (const auto& [k, v] : e->schedule_params) req.set[k] = v;
  auto loaded = dsl::load_schedule(req, recorder);
  if (!loaded && !missing.empty()) return unexpected(loaded.error());  // a file of ours is not there: say so here
  if (read.empty()) return out;

  std::vector<fs::path> paths;
  for (const auto& [p, text] : read) paths.push_back(absolute_normal(p));
  const fs::path root = common_folder(paths);
  std::map<std::string, std::string> files;
  for (std::size_t i = 0; i < read.size(); ++i)
    files[paths[i].lexically_relative(root).generic_string()] = read[i].second;
  for (auto& [name, text] : files) out.files.push_back({name, std::move(text)});
  out.schedule_main = absolute_normal(e->schedule_file).lexically_relative(root).generic_string();
  return out;
}

}  // namespace loom::daemon
