#include "runtime/daemon/state_dir.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace loom::daemon {

namespace fs = std::filesystem;

std::string state_paths::experiment_dir(std::int64_t id) const { return experiments + "/" + std::to_string(id); }

state_paths state_layout(const std::string& root) {
  std::error_code ec;
  fs::path abs = fs::absolute(root, ec);
  state_paths p;
  p.root = (ec ? fs::path(root) : abs).lexically_normal().string();
  while (p.root.size() > 1 && p.root.back() == '/') p.root.pop_back();
  p.db = p.root + "/experiments.db";
  p.token = p.root + "/token";
  p.endpoint = p.root + "/endpoint";
  p.lock = p.root + "/lock";
  p.experiments = p.root + "/experiments";
  p.workers = p.root + "/workers";
  return p;
}

std::string default_state_dir() {
  if (const char* s = std::getenv("LOOM_STATE"); s && *s) return s;
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : ".") + "/.local/state/loom";
}

expected<void> make_private_dir(const std::string& path) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec) return unexpected(errc::io_error, path + ": cannot create the folder: " + ec.message());
  if (::chmod(path.c_str(), 0700) != 0)
    return unexpected(errc::io_error, path + ": cannot set mode 0700: " + std::strerror(errno));
  return {};
}

expected<state_lock> state_lock::acquire(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return unexpected(errc::io_error, path + ": cannot open the lock: " + std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    char buf[32] = {};
    ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
    ::close(fd);
    std::string holder = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "";
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    if (err == EWOULDBLOCK)
      return unexpected(errc::unavailable, "another loomd" + (holder.empty() ? "" : " (pid " + holder + ")") +
                                               " is using this state folder (" + path + " is locked)");
    return unexpected(errc::io_error, path + ": cannot lock: " + std::strerror(err));
  }
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) == 0) (void)!::pwrite(fd, pid.data(), pid.size(), 0);
  return state_lock(fd);
}

state_lock::~state_lock() {
  if (fd_ >= 0) ::close(fd_);
}

std::string endpoint::to_string() const {
  bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

expected<endpoint> parse_endpoint(const std::string& raw) {
  std::string text = raw;
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) text.pop_back();
  auto bad = [&](const std::string& why) {
    return unexpected(errc::invalid_argument, "'" + text + "' is not HOST:PORT (" + why + ")");
  };
  endpoint e;
  std::string port;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') return bad("an IPv6 address is written [addr]:port");
    e.host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string::npos) return bad("no port");
    e.host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  if (e.host.empty()) return bad("no host");
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos) return bad("the port is not a number");
  long p = std::stol(port);
  if (p < 1 || p > 65535) return bad("the port is not in 1..65535");
  e.port = static_cast<std::uint16_t>(p);
  return e;
}

expected<endpoint> read_endpoint(const std::string& path) {
  std::ifstream in(path);
  if (!in) return unexpected(errc::unavailable, path + ": no endpoint file (is loomd running on this state folder?)");
  std::string line;
  std::getline(in, line);
  auto e = parse_endpoint(line);
  if (!e) return unexpected(errc::invalid_argument, path + ": " + e.error().message);
  return e;
}

expected<void> write_endpoint(const std::string& path, const endpoint& e) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << e.to_string() << "\n";
    out.close();
    if (!out) return unexpected(errc::io_error, tmp + ": cannot write");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) return unexpected(errc::io_error, path + ": " + ec.message());
  return {};
}

bool is_loopback(const std::string& host) {
  if (host == "localhost") return true;
  in_addr a4{};
  if (::inet_pton(AF_INET, host.c_str(), &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
  in6_addr a6{};
  if (::inet_pton(AF_INET6, host.c_str(), &a6) == 1) return IN6_IS_ADDR_LOOPBACK(&a6);
  return false;
}

}  // namespace loom::daemon
