#include "apps/loom/engine.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace loom::app {

const char* engine_about(std::string_view name) {
  for (const auto& c : engine_commands)
    if (name == c.name) return c.about;
  return "";
}

bool is_engine_command(std::string_view arg) {
  for (const auto& c : engine_commands)
    if (arg == c.name) return true;
  return false;
}

std::string engine_path() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  std::string self = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
  auto slash = self.rfind('/');
  return (slash == std::string::npos ? std::string(".") : self.substr(0, slash)) + "/" + engine_binary;
}

loom::error exec_engine(char** argv) {
  const std::string path = engine_path();
  ::execv(path.c_str(), argv);
  const int err = errno;
  const std::string command = argv[1] ? argv[1] : "";
  std::string message = "`loom " + command + "` needs " + engine_binary + " next to loom, but " + path;
  if (err == ENOENT)
    message += " does not exist (building the loom target builds both; keep them in one folder)";
  else
    message += " cannot be started: " + std::string(std::strerror(err));
  return loom::error(errc::unavailable, message);
}

}  // namespace loom::app
