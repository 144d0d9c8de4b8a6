#include "runtime/daemon/worker_launch.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <vector>

namespace loom::daemon {

namespace {

std::string seconds(double s) {
  std::ostringstream out;
  out << s;
  return out.str();
}

}  // namespace

launch_spec worker_spec(const worker_launch& w) {
  launch_spec spec;
  spec.program = w.loom_program;
  spec.args = {"worker", "--rendezvous", w.rendezvous, "--rank", std::to_string(w.rank), "--world", std::to_string(w.world),
               "--quiet", "--timeout", seconds(w.join_timeout), "--peer-timeout", seconds(w.peer_timeout)};
  spec.log_path = w.dir + "/rank-" + std::to_string(w.rank) + ".log";
  spec.cwd = w.dir;
  spec.priority = w.priority;
  return spec;
}

std::string log_tail(const std::string& path, std::size_t lines) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  in.seekg(0, std::ios::end);
  const auto size = static_cast<std::streamoff>(in.tellg());
  const std::streamoff keep = 8 << 10;
  in.seekg(size > keep ? size - keep : 0);
  std::stringstream ss;
  ss << in.rdbuf();
  std::vector<std::string> all;
  std::istringstream ls(ss.str());
  for (std::string l; std::getline(ls, l);) {
    if (auto cr = l.rfind('\r'); cr != std::string::npos) l = l.substr(cr + 1);
    if (!l.empty()) all.push_back(l);
  }
  std::string out;
  for (std::size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i) out += all[i] + "\n";
  if (out.size() > 2000) out = "..." + out.substr(out.size() - 2000);
  return out;
}

void append_line(const std::string& path, const std::string& line) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return;
  std::string text = line;
  if (text.empty() || text.back() != '\n') text += '\n';
  (void)!::write(fd, text.data(), text.size());  // one write: lines of concurrent writers do not mix
  ::close(fd);
}

bool safe_key(const std::string& key) {
  if (key.empty() || key.size() > 64) return false;
  for (char c : key)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-')) return false;
  return true;
}

}  // namespace loom::daemon
