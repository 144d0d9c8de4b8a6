// The `ucx` transport between two processes, measured the way ucx_perftest measures UCX itself, so
// bench/transport.sh can put the two side by side under the same UCX_TLS:
//   latency    8-byte ping-pong, half the round trip from a send() call to the peer's receive
//              callback and back (ucx_perftest -t tag_lat)
//   bandwidth  a window of messages one way, then a one-word acknowledgement (ucx_perftest -t tag_bw)
// The process forks a peer; the two swap UCX worker addresses through a pipe, as the control plane
// does in a real run. Output is one line per measurement, tab-separated, for the script to read.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "runtime/transport/ucx_transport.hpp"

using namespace loom;
using clock_type = std::chrono::steady_clock;

namespace {

struct options {
  std::vector<std::size_t> sizes{8, 1 << 20, 4 << 20, 16 << 20, 64 << 20};
  int latency_iterations = 20000;
  std::size_t bandwidth_bytes = std::size_t{1} << 30;  // moved per bandwidth figure
  int window = 16;                                      // messages in flight one way
  bool handoff = false;                                 // also time latency through a waiting thread
};

void fail(const std::string& what) {
  std::fprintf(stderr, "transport_bench: %s\n", what.c_str());
  std::exit(1);
}

void must(const expected<void>& r, const char* what) {
  if (!r) fail(std::string(what) + ": " + r.error().message);
}

// The main thread sleeps until a measurement's last callback says it is over. Sleeping, not
// spinning: the measurements run in the transport's callbacks, on its progress threads, and on a
// machine with few cores a spinning main thread would take the core one of them needs.
class finish_line {
 public:
  void cross() {
    std::lock_guard<std::mutex> lock(mutex_);
    done_ = true;
    ready_.notify_one();
  }
  void wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    ready_.wait(lock, [&] { return done_; });
    done_ = false;
  }

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  bool done_ = false;
};

actors::payload floats(std::size_t bytes) {
  actors::payload p;
  p.f.assign(std::max<std::size_t>(bytes / 4, 1), 1.0f);
  return p;
}

actors::tag tag_of(std::uint32_t i) { return actors::tag{actors::traffic::control, 0, 0, 0, i & 0xfffff}; }

actors::payload checked(expected<actors::payload> got) {
  if (!got) fail("receive failed: " + got.error().message);
  return std::move(*got);
}

// Latency: each receive callback posts the next receive and sends the reply, so a round trip is
// send() -> the peer's callback -> send() -> our callback, with no thread hand-off of our own in
// between (as ucx_perftest, whose one thread polls, sends and receives). Returns half a round trip
// in microseconds (rank 0), after `warm` untimed round trips.
double ping_pong(const actors::transport& t, int rank, std::size_t size, int iterations, int warm, std::uint32_t base) {
  struct state {
    const actors::transport* t;
    int peer, rank, last;
    std::size_t size;
    std::uint32_t base;
    int warm;
    clock_type::time_point start, end;
    finish_line done;
    actors::tag ping(int i) const { return tag_of(base + 2 * i); }
    actors::tag pong(int i) const { return tag_of(base + 2 * i + 1); }
    void rank0_got(int i) {
      if (i + 1 == warm) start = clock_type::now();
      if (i == last) {
        end = clock_type::now();
        return done.cross();
      }
      t->receive(peer, pong(i + 1), [this, i](expected<actors::payload> got) {
        checked(std::move(got));
        rank0_got(i + 1);
      });
      must(t->send(peer, ping(i + 1), floats(size)), "send");
    }
    void rank1_got(int i) {
      if (i < last)
        t->receive(peer, ping(i + 1), [this, i](expected<actors::payload> got) {
          checked(std::move(got));
          rank1_got(i + 1);
        });
      must(t->send(peer, pong(i), floats(size)), "send");
      if (i == last) done.cross();
    }
  };
  auto s = std::make_unique<state>();
  s->t = &t;
  s->peer = 1 - rank;
  s->rank = rank;
  s->size = size;
  s->base = base;
  s->warm = warm;
  s->last = warm + iterations - 1;
  if (rank == 0) {
    auto* p = s.get();
    if (warm == 0) s->start = clock_type::now();
    t.receive(s->peer, s->pong(0), [p](expected<actors::payload> got) {
      checked(std::move(got));
      p->rank0_got(0);
    });
    must(t.send(s->peer, s->ping(0), floats(size)), "send");
  } else {
    auto* p = s.get();
    t.receive(s->peer, s->ping(0), [p](expected<actors::payload> got) {
      checked(std::move(got));
      p->rank1_got(0);
    });
  }
  s->done.wait();
  return std::chrono::duration<double>(s->end - s->start).count() / iterations / 2 * 1e6;
}

// The same ping-pong through a thread that waits for each receive and then sends, as an actor fed
// by the callbacks would: what a consumer on another thread sees. The wait spins a while first, then
// sleeps (a machine with few cores needs the core back).
double ping_pong_via_thread(const actors::transport& t, int rank, std::size_t size, int iterations, std::uint32_t base) {
  struct waiter {
    std::atomic<int> done{0};
    std::mutex mutex;
    std::condition_variable ready;
    bool sleeping = false;
    actors::receive_callback callback() {
      return [this](expected<actors::payload> got) {
        checked(std::move(got));
        std::lock_guard<std::mutex> lock(mutex);
        done.fetch_add(1, std::memory_order_release);
        if (sleeping) ready.notify_one();
      };
    }
    void wait_for_one() {
      for (int spins = 0; spins < 20000 && done.load(std::memory_order_acquire) < 1; ++spins) {
      }
      std::unique_lock<std::mutex> lock(mutex);
      sleeping = true;
      ready.wait(lock, [&] { return done.load() >= 1; });
      sleeping = false;
      done.fetch_sub(1);
    }
  } w;
  const int peer = 1 - rank;
  const auto start = clock_type::now();
  for (int i = 0; i < iterations; ++i) {
    const auto ping = tag_of(base + 2 * i), pong = tag_of(base + 2 * i + 1);
    if (rank == 0) {
      t.receive(peer, pong, w.callback());
      must(t.send(peer, ping, floats(size)), "send");
      w.wait_for_one();
    } else {
      t.receive(peer, ping, w.callback());
      w.wait_for_one();
      must(t.send(peer, pong, floats(size)), "send");
    }
  }
  return std::chrono::duration<double>(clock_type::now() - start).count() / iterations / 2 * 1e6;
}

// Bandwidth: rank 0 sends a window of `size`-byte payloads, rank 1's receive callbacks count them and
// the last one sends the acknowledgement; rank 0's clock runs from its first send() call to the
// acknowledgement's callback. The sender's payloads are made before the clock runs (a real run's
// come from the kernels), as ucx_perftest's buffer is; the receiver's allocation is the transport's
// and counts. One warm-up window, untimed, so registration and connection setup are not counted.
// Returns 10^6 bytes per second (rank 0).
double stream(const actors::transport& t, int rank, std::size_t size, int window, int windows, std::uint32_t base) {
  const int peer = 1 - rank;
  const int total = windows + 1;
  auto message = [&](int w, int m) { return tag_of(base + w * (window + 1) + m); };
  finish_line done;
  if (rank == 1) {
    auto counts = std::make_shared<std::vector<std::atomic<int>>>(total);
    for (int w = 0; w < total; ++w)
      for (int m = 0; m < window; ++m)
        t.receive(peer, message(w, m), [&t, &done, counts, w, window, total, peer, ack = message(w, window)](expected<actors::payload> got) {
          checked(std::move(got));  // dropped here: the receiver frees what it got, as a consumer would
          if ((*counts)[w].fetch_add(1) + 1 < window) return;
          must(t.send(peer, ack, floats(4)), "send");
          if (w + 1 == total) done.cross();
        });
    done.wait();
    return 0;
  }
  double seconds = 0;
  for (int w = 0; w < total; ++w) {
    std::vector<actors::payload> messages;
    for (int m = 0; m < window; ++m) messages.push_back(floats(size));
    clock_type::time_point end;
    const auto start = clock_type::now();
    t.receive(peer, message(w, window), [&](expected<actors::payload> got) {
      checked(std::move(got));
      end = clock_type::now();
      done.cross();
    });
    for (int m = 0; m < window; ++m) must(t.send(peer, message(w, m), std::move(messages[m])), "send");
    done.wait();
    if (w > 0) seconds += std::chrono::duration<double>(end - start).count();
  }
  return static_cast<double>(size) * window * windows / seconds / 1e6;
}

// Rank 0 measures; rank 1 mirrors. Both walk the same sequence of sizes and tags.
void run_rank(int rank, const actors::transport& t, const options& o) {
  std::uint32_t next_tag = 0;
  for (std::size_t size : o.sizes) {
    if (size <= 8192) {
      const int warm = o.latency_iterations / 10;
      const double us = ping_pong(t, rank, size, o.latency_iterations, warm, next_tag);
      next_tag += 2 * (o.latency_iterations + warm);
      if (rank == 0) std::printf("latency\t%zu\t%.3f\n", size, us);
      if (o.handoff) {
        const double via = ping_pong_via_thread(t, rank, size, o.latency_iterations, next_tag);
        next_tag += 2 * o.latency_iterations;
        if (rank == 0) std::printf("latency_via_thread\t%zu\t%.3f\n", size, via);
      }
    } else {
      const int windows = std::max<int>(2, static_cast<int>(o.bandwidth_bytes / size / o.window));
      const double mb = stream(t, rank, size, o.window, windows, next_tag);
      next_tag += (windows + 1) * (o.window + 1);
      if (rank == 0) std::printf("bandwidth\t%zu\t%.1f\n", size, mb);
    }
    std::fflush(stdout);
  }
}

std::vector<std::uint8_t> read_exactly(int fd, std::size_t n) {
  std::vector<std::uint8_t> out(n);
  std::size_t got = 0;
  while (got < n) {
    const ssize_t r = ::read(fd, out.data() + got, n - got);
    if (r <= 0) {
      std::fprintf(stderr, "transport_bench: the peer process went away during setup\n");
      std::exit(1);
    }
    got += static_cast<std::size_t>(r);
  }
  return out;
}

void write_all(int fd, const void* data, std::size_t n) {
  const auto* at = static_cast<const std::uint8_t*>(data);
  while (n > 0) {
    const ssize_t r = ::write(fd, at, n);
    if (r <= 0) std::exit(1);
    at += r;
    n -= static_cast<std::size_t>(r);
  }
}

// Sends this rank's address on `out` and reads the peer's from `in`.
std::vector<std::uint8_t> swap_addresses(const std::vector<std::uint8_t>& mine, int out, int in) {
  const std::uint64_t n = mine.size();
  write_all(out, &n, sizeof n);
  write_all(out, mine.data(), mine.size());
  std::uint64_t m = 0;
  const auto header = read_exactly(in, sizeof m);
  std::memcpy(&m, header.data(), sizeof m);
  return read_exactly(in, m);
}

int usage(const char* argv0) {
  std::printf(
      "usage: %s [--sizes B,B,...] [--iterations N] [--bytes B] [--window N] [--via-thread]\n"
      "  --sizes       message sizes in bytes; <= 8192 measures latency, larger bandwidth\n"
      "                (default 8,1048576,4194304,16777216,67108864)\n"
      "  --iterations  ping-pong round trips per latency figure (default 20000)\n"
      "  --bytes       bytes moved per bandwidth figure (default 1073741824)\n"
      "  --window      messages in flight one way (default 16)\n"
      "  --via-thread  also time latency through a thread that waits for each receive and sends\n"
      "UCX_TLS and UCX_NET_DEVICES choose the wire, as for any UCX program.\n",
      argv0);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--help" || a == "-h") return usage(argv[0]);
    if (a == "--sizes" && has_value) {
      o.sizes.clear();
      std::string list = argv[++i];
      for (std::size_t at = 0; at <= list.size();) {
        const std::size_t comma = std::min(list.find(',', at), list.size());
        o.sizes.push_back(std::strtoull(list.substr(at, comma - at).c_str(), nullptr, 10));
        at = comma + 1;
      }
    } else if (a == "--iterations" && has_value) {
      o.latency_iterations = std::atoi(argv[++i]);
    } else if (a == "--bytes" && has_value) {
      o.bandwidth_bytes = std::strtoull(argv[++i], nullptr, 10);
    } else if (a == "--window" && has_value) {
      o.window = std::atoi(argv[++i]);
    } else if (a == "--via-thread") {
      o.handoff = true;
    } else {
      std::fprintf(stderr, "transport_bench: unknown or incomplete option '%s' (see --help)\n", a.c_str());
      return 2;
    }
  }
  if (o.latency_iterations < 1 || o.window < 1 || o.sizes.empty() ||
      std::any_of(o.sizes.begin(), o.sizes.end(), [](std::size_t s) { return s == 0; })) {
    std::fprintf(stderr, "transport_bench: sizes, iterations and window must be positive\n");
    return 2;
  }

  int to_child[2], to_parent[2];
  if (::pipe(to_child) != 0 || ::pipe(to_parent) != 0) return 1;
  const pid_t child = ::fork();
  const int rank = child == 0 ? 1 : 0;

  auto state = transport::make_ucx_transport(rank, 2);
  if (!state) {
    std::fprintf(stderr, "transport_bench: %s\n", state.error().message.c_str());
    return 1;
  }
  const auto mine = transport::ucx_address(*state);
  const auto theirs = rank == 0 ? swap_addresses(mine, to_child[1], to_parent[0]) : swap_addresses(mine, to_parent[1], to_child[0]);
  std::vector<std::vector<std::uint8_t>> addresses(2);
  addresses[rank] = mine;
  addresses[1 - rank] = theirs;
  must(transport::ucx_connect(*state, addresses), "connect");

  run_rank(rank, transport::ucx_handle(*state), o);
  transport::ucx_close(*state);
  if (rank == 1) ::_exit(0);
  int status = 0;
  ::waitpid(child, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
