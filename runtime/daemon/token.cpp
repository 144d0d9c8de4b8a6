#include "runtime/daemon/token.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace loom::daemon {

namespace {

constexpr std::size_t token_bytes = 32;

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

expected<std::string> read_small_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return unexpected(errc::io_error, path + ": cannot read the token: " + std::strerror(errno));
  std::string text(256, '\0');
  ssize_t n = ::read(fd, text.data(), text.size());
  ::close(fd);
  if (n < 0) return unexpected(errc::io_error, path + ": cannot read the token: " + std::strerror(errno));
  text.resize(static_cast<std::size_t>(n));
  return trim(text);
}

}  // namespace

expected<std::string> read_token(const std::string& path) {
  auto t = read_small_file(path);
  if (!t) return t;
  if (t->empty()) return unexpected(errc::io_error, path + ": the token file is empty");
  return t;
}

expected<std::string> load_or_create_token(const std::string& path, std::string* warning) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    if ((st.st_mode & 077) != 0) {
      if (::chmod(path.c_str(), 0600) != 0)
        return unexpected(errc::io_error, path + ": the token is readable by others and cannot be narrowed: " + std::strerror(errno));
      if (warning) *warning = path + " was readable by other users; it is now mode 0600 (consider a new token: delete it and restart)";
    }
    return read_token(path);
  }
  unsigned char raw[token_bytes];
  int rnd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (rnd < 0) return unexpected(errc::io_error, std::string("/dev/urandom: ") + std::strerror(errno));
  std::size_t got = 0;
  while (got < token_bytes) {
    ssize_t n = ::read(rnd, raw + got, token_bytes - got);
    if (n <= 0) {
      ::close(rnd);
      return unexpected(errc::io_error, "/dev/urandom: short read");
    }
    got += static_cast<std::size_t>(n);
  }
  ::close(rnd);
  static const char* hex = "0123456789abcdef";
  std::string token;
  for (unsigned char c : raw) {
    token += hex[c >> 4];
    token += hex[c & 15];
  }
  // O_EXCL: two daemons racing on a fresh folder cannot both write one.
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EEXIST) return read_token(path);
    return unexpected(errc::io_error, path + ": cannot create the token: " + std::strerror(errno));
  }
  std::string line = token + "\n";
  bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) return unexpected(errc::io_error, path + ": cannot write the token");
  return token;
}

bool tokens_equal(const std::string& expected_token, const std::string& given) {
  // Always walks the whole expected token; differences accumulate without early exit.
  unsigned char diff = expected_token.size() == given.size() ? 0 : 1;
  for (std::size_t i = 0; i < expected_token.size(); ++i) {
    unsigned char g = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
    diff |= static_cast<unsigned char>(static_cast<unsigned char>(expected_token[i]) ^ g);
  }
  return diff == 0 && !expected_token.empty();
}

}  // namespace loom::daemon
