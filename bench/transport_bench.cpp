// The `ucx` transport between two processes, measured the way ucx_perftest measures UCX itself, so
// bench/transport.sh can put the two side by side under the same UCX_TLS:
//   latency    8-byte ping-pong, half the round trip (ucx_perftest -t tag_lat)
//   bandwidth  a window of messages one way, then a one-word acknowledgement (ucx_perftest -t tag_bw)
// The process forks a peer; the two swap UCX worker addresses through a pipe, as the control plane
// does in a real run. Output is one line per measurement, tab-separated, for the script to read.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
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
};

// Waits until receives complete; a transport receive calls back on the progress thread. The wait
// spins a while first, as ucx_perftest's does, so that with cores to spare the figure is the
// transport's and not a thread wake-up's; then it sleeps (a machine with few cores needs them back).
class waiter {
 public:
  actors::receive_callback callback() {
    return [this](expected<actors::payload> got) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!got) failure_ = got.error().message;
      done_.fetch_add(1, std::memory_order_release);
      if (sleeping_) ready_.notify_one();
    };
  }
  void wait_for(int count) {
    for (int spins = 0; spins < 20000 && done_.load(std::memory_order_acquire) < count; ++spins) {
    }
    std::unique_lock<std::mutex> lock(mutex_);
    sleeping_ = true;
    ready_.wait(lock, [&] { return done_.load() >= count; });
    sleeping_ = false;
    done_.fetch_sub(count);
    if (!failure_.empty()) {
      std::fprintf(stderr, "transport_bench: receive failed: %s\n", failure_.c_str());
      std::exit(1);
    }
  }

 private:
  std::atomic<int> done_{0};
  std::mutex mutex_;
  std::condition_variable ready_;
  bool sleeping_ = false;
  std::string failure_;
};

actors::payload floats(std::size_t bytes) {
  actors::payload p;
  p.f.assign(std::max<std::size_t>(bytes / 4, 1), 1.0f);
  return p;
}

actors::tag tag_of(std::uint32_t i) { return actors::tag{actors::traffic::control, 0, 0, 0, i & 0xfffff}; }

void must(const expected<void>& r, const char* what) {
  if (!r) {
    std::fprintf(stderr, "transport_bench: %s: %s\n", what, r.error().message.c_str());
    std::exit(1);
  }
}

// Rank 0 measures; rank 1 mirrors. Both walk the same sequence of sizes.
void run_rank(int rank, const actors::transport& t, const options& o) {
  const int peer = 1 - rank;
  waiter w;
  std::uint32_t next_tag = 0;
  for (std::size_t size : o.sizes) {
    const bool latency = size <= 8192;
    if (latency) {
      const int iterations = o.latency_iterations;
      const auto start = clock_type::now();
      for (int i = 0; i < iterations; ++i) {
        const auto tg = tag_of(next_tag++);
        if (rank == 0) {
          t.receive(peer, tag_of(next_tag), w.callback());
          must(t.send(peer, tg, floats(size)), "send");
          w.wait_for(1);
        } else {
          t.receive(peer, tg, w.callback());
          w.wait_for(1);
          must(t.send(peer, tag_of(next_tag), floats(size)), "send");
        }
        ++next_tag;
      }
      const double seconds = std::chrono::duration<double>(clock_type::now() - start).count();
      if (rank == 0) std::printf("latency\t%zu\t%.3f\n", size, seconds / iterations / 2 * 1e6);
    } else {
      const int windows = std::max<int>(2, static_cast<int>(o.bandwidth_bytes / size / o.window));
      // The sender's payloads are made before the clock runs (a real run's payloads come from the
      // kernels), as ucx_perftest's buffer is; the receiver's allocation is the transport's and counts.
      // One warm-up window, untimed, so registration and connection setup are not counted.
      double seconds = 0;
      for (int k = 0; k <= windows; ++k) {
        std::vector<actors::payload> messages;
        if (rank == 0)
          for (int m = 0; m < o.window; ++m) messages.push_back(floats(size));
        const std::uint32_t base = next_tag;
        next_tag += o.window + 1;
        const auto start = clock_type::now();
        if (rank == 0) {
          t.receive(peer, tag_of(base + o.window), w.callback());
          for (int m = 0; m < o.window; ++m) must(t.send(peer, tag_of(base + m), std::move(messages[m])), "send");
          w.wait_for(1);
        } else {
          for (int m = 0; m < o.window; ++m) t.receive(peer, tag_of(base + m), w.callback());
          w.wait_for(o.window);
          must(t.send(peer, tag_of(base + o.window), floats(4)), "send");
        }
        if (k > 0) seconds += std::chrono::duration<double>(clock_type::now() - start).count();
      }
      const double bytes = static_cast<double>(size) * o.window * windows;
      if (rank == 0) std::printf("bandwidth\t%zu\t%.1f\n", size, bytes / seconds / 1e6);
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
      "usage: %s [--sizes B,B,...] [--iterations N] [--bytes B] [--window N]\n"
      "  --sizes       message sizes in bytes; <= 8192 measures latency, larger bandwidth\n"
      "                (default 8,1048576,4194304,16777216,67108864)\n"
      "  --iterations  ping-pong round trips per latency figure (default 20000)\n"
      "  --bytes       bytes moved per bandwidth figure (default 1073741824)\n"
      "  --window      messages in flight one way (default 16)\n"
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
