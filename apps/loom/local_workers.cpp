#include "apps/loom/local_workers.hpp"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

namespace loom::app {

pid_t spawn_worker(int rank, int world, std::uint16_t port) {
  const std::string rendezvous = "127.0.0.1:" + std::to_string(port);
  const std::string r = std::to_string(rank), w = std::to_string(world);
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid != 0) return pid;
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(1);  // the parent died before prctl took effect
  const char* argv[] = {"loom", "worker", "--rendezvous", rendezvous.c_str(), "--rank", r.c_str(), "--world", w.c_str(), "--quiet", nullptr};
  ::execv("/proc/self/exe", const_cast<char* const*>(argv));
  ::_exit(127);
}

void reap(const std::vector<pid_t>& children) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  std::vector<pid_t> left = children;
  while (!left.empty() && std::chrono::steady_clock::now() < deadline) {
    for (auto it = left.begin(); it != left.end();) {
      int status = 0;
      pid_t got = ::waitpid(*it, &status, WNOHANG);
      if (got == *it || got < 0) it = left.erase(it);
      else ++it;
    }
    if (!left.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (pid_t p : left) {
    ::kill(p, SIGKILL);
    ::waitpid(p, nullptr, 0);
  }
}

}  // namespace loom::app
