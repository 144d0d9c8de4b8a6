#include "apps/loom/schedule_options.hpp"

#include <fstream>
#include <iostream>

namespace loom::app {

void schedule_options::add_to(CLI::App& cmd) {
  cmd.add_option("FILE", file, "Schedule: language (.sched), action text (.txt) or PyTorch CSV (.csv)")->required();
  cmd.add_option("--set", set, "Schedule parameter NAME=VALUE (repeatable), e.g. --set ranks=8")->type_name("NAME=VALUE");
  cmd.add_option("--schedule", schedule_name, "Which schedule of the file, when it defines several");
}

std::optional<dsl::loaded_schedule> schedule_options::load(bool validate) const {
  dsl::load_request req;
  req.path = file;
  req.schedule_name = schedule_name;
  req.validate = validate;
  for (const auto& item : set) {
    auto kv = dsl::parse_assignment(item);
    if (!kv) {
      print_error(kv.error());
      return std::nullopt;
    }
    req.set[kv->first] = kv->second;
  }
  auto loaded = dsl::load_schedule(req);
  if (!loaded) {
    print_error(loaded.error());
    return std::nullopt;
  }
  return std::move(*loaded);
}

void print_error(const loom::error& e) {
  // Located diagnostics already start with "file:line:col: error:"; other errors get a prefix.
  const std::string& m = e.message;
  bool located = m.find(": error: ") != std::string::npos;
  std::cerr << (located ? "" : "loom: error: ") << m << (m.empty() || m.back() != '\n' ? "\n" : "");
}

bool write_output(const std::string& path, const std::string& text) {
  if (path.empty() || path == "-") {
    std::cout << text;
    return static_cast<bool>(std::cout);
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) {
    std::cerr << "loom: error: cannot write " << path << "\n";
    return false;
  }
  return true;
}

}  // namespace loom::app
