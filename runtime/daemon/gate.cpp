#include "runtime/daemon/gate.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>
#include <unordered_map>
#include <vector>

#include "runtime/daemon/basp_framing.hpp"

namespace loom::daemon {

namespace {

constexpr std::size_t read_chunk = 64u << 10;

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

std::string peer_name(const sockaddr_storage& a) {
  char host[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  if (a.ss_family == AF_INET) {
    const auto& v4 = reinterpret_cast<const sockaddr_in&>(a);
    ::inet_ntop(AF_INET, &v4.sin_addr, host, sizeof host);
    port = ntohs(v4.sin_port);
  } else if (a.ss_family == AF_INET6) {
    const auto& v6 = reinterpret_cast<const sockaddr_in6&>(a);
    ::inet_ntop(AF_INET6, &v6.sin6_addr, host, sizeof host);
    port = ntohs(v6.sin6_port);
  }
  return std::string(host) + ":" + std::to_string(port);
}

// Bytes on their way to one side: what could not be written yet.
struct outbox {
  std::vector<char> bytes;
  std::size_t sent = 0;
  bool empty() const { return sent == bytes.size(); }
};

struct connection {
  int client = -1, backend = -1;
  std::string peer;
  bool backend_ready = false;        // its connect finished
  bool closing = false;              // one side ended: flush what is pending, then close
  outbox to_backend, to_client;
  basp_scanner scanner;
  std::size_t largest = 0;  // its largest payload above small_message_bytes: the middleman keeps a buffer that size
  std::uint32_t client_events = 0, backend_events = 0;  // what epoll watches now
};

// epoll_data: the connection's id, and which of its two sockets (the low bit).
std::uint64_t tag(std::uint64_t id, bool backend) { return (id << 1) | (backend ? 1u : 0u); }

}  // namespace

struct gate::state {
  gate_settings settings;
  int listener = -1, epoll = -1, wake = -1;
  std::uint16_t port = 0;
  std::thread thread;
  std::unordered_map<std::uint64_t, connection> connections;
  std::uint64_t next_id = 1;
  std::size_t held = 0;  // the sum of the connections' `largest`
  bool listening = true;  // false while out of file descriptors
  std::vector<char> buffer = std::vector<char>(read_chunk);
  // Rate limit of the log: bursts of up to 20 lines, then one a second, with a count of what it left out.
  double log_tokens = 20;
  std::chrono::steady_clock::time_point last_log = std::chrono::steady_clock::now();
  std::size_t unlogged = 0;

  ~state() {
    for (auto& [id, c] : connections) {
      if (c.client >= 0) ::close(c.client);
      if (c.backend >= 0) ::close(c.backend);
    }
    for (int fd : {listener, epoll, wake})
      if (fd >= 0) ::close(fd);
  }

  void log(const std::string& line) {
    if (!settings.log) return;
    const auto now = std::chrono::steady_clock::now();
    log_tokens = std::min(20.0, log_tokens + std::chrono::duration<double>(now - last_log).count());
    last_log = now;
    if (log_tokens < 1) {
      ++unlogged;
      return;
    }
    log_tokens -= 1;
    std::string text = "loomd: " + line;
    if (unlogged > 0) text += " (and " + std::to_string(unlogged) + " more refusals since the last line)";
    unlogged = 0;
    settings.log(text);
  }

  void watch(connection& c, std::uint64_t id, bool backend) {
    std::uint32_t want = 0;
    if (backend) {
      if (!c.backend_ready || !c.to_backend.empty()) want |= EPOLLOUT;
      if (c.backend_ready && c.to_client.empty() && !c.closing) want |= EPOLLIN;
    } else {
      if (!c.to_client.empty()) want |= EPOLLOUT;
      if (c.backend_ready && c.to_backend.empty() && !c.closing) want |= EPOLLIN;
    }
    std::uint32_t& now = backend ? c.backend_events : c.client_events;
    if (want == now) return;
    epoll_event ev{};
    ev.events = want;
    ev.data.u64 = tag(id, backend);
    ::epoll_ctl(epoll, EPOLL_CTL_MOD, backend ? c.backend : c.client, &ev);
    now = want;
  }

  void close_connection(std::uint64_t id) {
    auto it = connections.find(id);
    if (it == connections.end()) return;
    ::close(it->second.client);  // closing a socket also removes it from the epoll set
    ::close(it->second.backend);
    held -= it->second.largest;
    connections.erase(it);
    if (!listening) watch_listener(true);
  }

  // Whether epoll reports connections waiting on the listener.
  void watch_listener(bool on) {
    epoll_event ev{};
    ev.events = on ? static_cast<std::uint32_t>(EPOLLIN) : 0u;
    ev.data.u64 = ~std::uint64_t{0};
    ::epoll_ctl(epoll, EPOLL_CTL_MOD, listener, &ev);
    listening = on;
  }

  // Writes what `box` holds to `fd`; false on an error (the peer is gone).
  static bool flush(int fd, outbox& box) {
    while (!box.empty()) {
      const ssize_t n = ::send(fd, box.bytes.data() + box.sent, box.bytes.size() - box.sent, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno == EAGAIN || errno == EWOULDBLOCK;
      }
      box.sent += static_cast<std::size_t>(n);
    }
    box.bytes.clear();
    box.sent = 0;
    return true;
  }

  // Sends `n` bytes to `fd` (whose outbox is empty: a side is read only then), keeping what does not
  // fit now; false on an error.
  static bool relay(int fd, outbox& box, const char* p, std::size_t n) {
    while (n > 0) {
      const ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL);
      if (k < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return false;
        break;
      }
      p += k;
      n -= static_cast<std::size_t>(k);
    }
    box.bytes.assign(p, p + n);
    box.sent = 0;
    return true;
  }

  void accept_all() {
    for (;;) {
      sockaddr_storage addr{};
      socklen_t len = sizeof addr;
      const int fd = ::accept4(listener, reinterpret_cast<sockaddr*>(&addr), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EMFILE || errno == ENFILE) {
          // The pending connection keeps the listener readable: stop watching it until one closes,
          // or the loop would spin on the same failure.
          log("cannot accept a connection: out of file descriptors (waiting for one to close)");
          watch_listener(false);
        }
        return;  // EAGAIN: no more for now
      }
      if (connections.size() >= settings.max_connections) {
        log("refused a connection from " + peer_name(addr) + ": " + std::to_string(connections.size()) +
            " connections are open already");
        ::close(fd);
        continue;
      }
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      const int backend = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (backend < 0) {
        log(errno_text("cannot open a socket to the middleman"));
        ::close(fd);
        continue;
      }
      ::setsockopt(backend, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      sockaddr_in to{};
      to.sin_family = AF_INET;
      to.sin_port = htons(settings.backend_port);
      to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      const int rc = ::connect(backend, reinterpret_cast<const sockaddr*>(&to), sizeof to);
      if (rc < 0 && errno != EINPROGRESS) {
        log(errno_text("cannot reach the middleman"));
        ::close(fd);
        ::close(backend);
        continue;
      }
      const std::uint64_t id = next_id++;
      connection& c = connections[id];
      c.client = fd;
      c.backend = backend;
      c.peer = peer_name(addr);
      c.backend_ready = rc == 0;
      epoll_event ev{};
      ev.data.u64 = tag(id, false);
      ::epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &ev);
      ev.data.u64 = tag(id, true);
      ::epoll_ctl(epoll, EPOLL_CTL_ADD, backend, &ev);
      watch(c, id, false);
      watch(c, id, true);
    }
  }

  // One event on one side of connection `id`. Returns false when the connection is done.
  bool on_event(std::uint64_t id, connection& c, bool backend, std::uint32_t events) {
    if (backend && !c.backend_ready && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(c.backend, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) return false;
      c.backend_ready = true;
    }
    if (events & EPOLLOUT) {
      if (!flush(backend ? c.backend : c.client, backend ? c.to_backend : c.to_client)) return false;
    }
    // A side is read only while what it sent before has all gone on; a hang-up that comes meanwhile
    // (epoll reports those unasked) ends the connection once that is flushed.
    const bool earlier_sent = backend ? c.to_client.empty() : c.to_backend.empty();
    if ((events & (EPOLLHUP | EPOLLERR)) && !earlier_sent) c.closing = true;
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && earlier_sent) {
      const int from = backend ? c.backend : c.client;
      const ssize_t n = ::recv(from, buffer.data(), buffer.size(), 0);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        c.closing = true;  // the other side still gets what is on its way
      } else if (n > 0) {
        const auto bytes = static_cast<std::size_t>(n);
        if (backend) {
          if (!relay(c.client, c.to_client, buffer.data(), bytes)) return false;
        } else {
          auto accept = [&](std::uint32_t announced) {
            if (announced <= settings.small_message_bytes || announced <= c.largest) return true;
            std::string why;
            if (announced > settings.max_message_bytes)
              why = "at most " + std::to_string(settings.max_message_bytes) + " are accepted";
            else if (held + (announced - c.largest) > settings.max_held_bytes)
              why = "the open connections hold " + std::to_string(held) + " bytes of messages already";
            if (!why.empty()) {
              log("closed the connection from " + c.peer + ": it announced a message of " + std::to_string(announced) +
                  " bytes (" + why + ")");
              return false;
            }
            held += announced - c.largest;
            c.largest = announced;
            return true;
          };
          if (!c.scanner.scan(buffer.data(), bytes, accept)) return false;
          if (!relay(c.backend, c.to_backend, buffer.data(), bytes)) return false;
        }
      }
    }
    if (c.closing && c.to_backend.empty() && c.to_client.empty()) return false;
    watch(c, id, false);
    watch(c, id, true);
    return true;
  }

  void loop() {
    std::vector<epoll_event> events(256);
    for (;;) {
      const int n = ::epoll_wait(epoll, events.data(), static_cast<int>(events.size()), -1);
      if (n < 0) {
        if (errno == EINTR) continue;
        return;
      }
      for (int i = 0; i < n; ++i) {
        const std::uint64_t t = events[i].data.u64;
        if (t == 0) return;  // the wake-up: the gate is closing
        if (t == ~std::uint64_t{0}) {
          accept_all();
          continue;
        }
        const std::uint64_t id = t >> 1;
        auto it = connections.find(id);
        if (it == connections.end()) continue;  // closed by an earlier event of this batch
        if (!on_event(id, it->second, (t & 1u) != 0, events[i].events)) close_connection(id);
      }
    }
  }
};

gate::gate(std::unique_ptr<state> s) : state_(std::move(s)) {}

gate::~gate() {
  if (state_->thread.joinable()) {
    const std::uint64_t one = 1;
    [[maybe_unused]] const ssize_t w = ::write(state_->wake, &one, sizeof one);
    state_->thread.join();
  }
}

std::uint16_t gate::port() const { return state_->port; }

expected<std::unique_ptr<gate>> gate::open(gate_settings settings) {
  auto s = std::make_unique<state>();
  s->settings = std::move(settings);
  const std::string where = s->settings.host + ":" + std::to_string(s->settings.port);

  // Two descriptors a connection: keep well inside the process's limit.
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0) {
    if (files.rlim_cur < files.rlim_max) {
      files.rlim_cur = std::min<rlim_t>(files.rlim_max, 65536);
      ::setrlimit(RLIMIT_NOFILE, &files);
      ::getrlimit(RLIMIT_NOFILE, &files);
    }
    if (files.rlim_cur != RLIM_INFINITY && files.rlim_cur > 256)
      s->settings.max_connections = std::min<std::size_t>(s->settings.max_connections, (files.rlim_cur - 128) / 2);
  }

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(s->settings.port);
  const char* node = s->settings.host.empty() ? nullptr : s->settings.host.c_str();
  if (int rc = ::getaddrinfo(node, service.c_str(), &hints, &found); rc != 0)
    return unexpected(errc::io_error, "cannot listen on " + where + ": " + ::gai_strerror(rc));
  std::string why = "no address";
  for (addrinfo* a = found; a != nullptr && s->listener < 0; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      why = std::strerror(errno);
      continue;
    }
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd, 512) != 0) {
      why = std::strerror(errno);
      ::close(fd);
      continue;
    }
    s->listener = fd;
  }
  ::freeaddrinfo(found);
  if (s->listener < 0) return unexpected(errc::io_error, "cannot listen on " + where + ": " + why);

  sockaddr_storage bound{};
  socklen_t len = sizeof bound;
  ::getsockname(s->listener, reinterpret_cast<sockaddr*>(&bound), &len);
  s->port = bound.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6&>(bound).sin6_port)
                                         : ntohs(reinterpret_cast<sockaddr_in&>(bound).sin_port);

  s->epoll = ::epoll_create1(EPOLL_CLOEXEC);
  s->wake = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (s->epoll < 0 || s->wake < 0) return unexpected(errc::io_error, errno_text("gate: epoll"));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = ~std::uint64_t{0};
  ::epoll_ctl(s->epoll, EPOLL_CTL_ADD, s->listener, &ev);
  ev.data.u64 = 0;
  ::epoll_ctl(s->epoll, EPOLL_CTL_ADD, s->wake, &ev);

  state* raw = s.get();
  s->thread = std::thread([raw] { raw->loop(); });
  return std::unique_ptr<gate>(new gate(std::move(s)));
}

}  // namespace loom::daemon
