#include "runtime/daemon/supervisor.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <thread>

extern char** environ;

namespace loom::daemon {

namespace {

std::vector<std::string> merged_environment(const std::vector<std::string>& extra) {
  std::map<std::string, std::string> env;
  for (char** e = environ; e && *e; ++e) {
    std::string kv = *e;
    env[kv.substr(0, kv.find('='))] = kv;
  }
  for (const auto& kv : extra) env[kv.substr(0, kv.find('='))] = kv;
  std::vector<std::string> out;
  for (auto& [k, kv] : env) out.push_back(std::move(kv));
  return out;
}

// Running, not a zombie (an orphan's zombie may linger where nothing reaps it, e.g. in a container).
bool alive(pid_t pid) {
  if (::kill(pid, 0) != 0 && errno != EPERM) return false;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  std::getline(in, stat);
  auto close = stat.rfind(')');
  return !(close != std::string::npos && close + 2 < stat.size() && (stat[close + 2] == 'Z' || stat[close + 2] == 'X'));
}

}  // namespace

expected<pid_t> launch(const launch_spec& spec) {
  // Everything the child needs is prepared here: between fork and exec only async-signal-safe calls.
  std::vector<std::string> argv_s;
  argv_s.push_back(spec.program);
  argv_s.insert(argv_s.end(), spec.args.begin(), spec.args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_s = merged_environment(spec.env);
  std::vector<char*> envp;
  for (auto& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);

  int log = ::open(spec.log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
  if (log < 0) return unexpected(errc::io_error, spec.log_path + ": cannot create the log: " + std::strerror(errno));
  int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null < 0) {
    ::close(log);
    return unexpected(errc::io_error, std::string("/dev/null: ") + std::strerror(errno));
  }
  const char* cwd = spec.cwd.empty() ? nullptr : spec.cwd.c_str();
  pid_t pid = ::fork();
  if (pid < 0) {
    int err = errno;
    ::close(log);
    ::close(null);
    return unexpected(errc::io_error, std::string("cannot start a process: fork: ") + std::strerror(err));
  }
  if (pid == 0) {
    ::setsid();
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    ::dup2(null, 0);
    ::dup2(log, 1);
    ::dup2(log, 2);
    ::close_range(3, ~0u, 0);
    if (spec.priority.nice != 0) (void)!::nice(spec.priority.nice);
    if (spec.priority.idle) {
      sched_param none{};
      none.sched_priority = 0;
      (void)::sched_setscheduler(0, SCHED_IDLE, &none);  // best effort, like nice(): never fails a run
    }
    if (cwd && ::chdir(cwd) != 0) {
      static const char msg[] = "loomd: cannot enter the run's folder\n";
      (void)!::write(2, msg, sizeof msg - 1);
      ::_exit(127);
    }
    ::execve(argv[0], argv.data(), envp.data());
    static const char msg[] = "loomd: cannot execute the loom binary\n";
    (void)!::write(2, msg, sizeof msg - 1);
    ::_exit(127);
  }
  ::close(log);
  ::close(null);
  return pid;
}

std::string exit_status::describe() const {
  if (signal != 0) return "killed by signal " + std::to_string(signal) + " (" + strsignal(signal) + ")";
  return "exited with code " + std::to_string(code);
}

std::optional<exit_status> poll_exit(pid_t pid) {
  int st = 0;
  pid_t r = ::waitpid(pid, &st, WNOHANG);
  if (r == 0) return std::nullopt;
  exit_status out;
  if (r < 0) {  // not our child any more (reaped elsewhere): report it as gone
    out.code = -1;
    return out;
  }
  if (WIFEXITED(st)) out.code = WEXITSTATUS(st);
  else if (WIFSIGNALED(st)) out.signal = WTERMSIG(st);
  return out;
}

void signal_group(pid_t pgid, int sig) {
  if (pgid <= 1) return;
  ::kill(-pgid, sig);  // never the bare pid: once reaped, it may belong to someone else
}

std::vector<pid_t> find_runs_under(const std::string& prefix) {
  std::vector<pid_t> out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  const pid_t self = ::getpid();
  while (dirent* ent = ::readdir(d)) {
    const char* n = ent->d_name;
    if (*n < '1' || *n > '9') continue;
    pid_t pid = static_cast<pid_t>(std::strtol(n, nullptr, 10));
    if (pid == self) continue;
    std::ifstream in(std::string("/proc/") + n + "/cmdline", std::ios::binary);
    std::string cmd((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::string> args;
    std::size_t start = 0;
    while (start < cmd.size()) {
      auto end = cmd.find('\0', start);
      if (end == std::string::npos) end = cmd.size();
      args.push_back(cmd.substr(start, end - start));
      start = end + 1;
    }
    if (args.size() < 2 || (args[1] != "run" && args[1] != "worker")) continue;
    bool mine = false;
    for (std::size_t i = 2; i < args.size() && !mine; ++i) mine = args[i].rfind(prefix, 0) == 0;
    if (!mine) {
      char buf[4096];
      ssize_t len = ::readlink((std::string("/proc/") + n + "/cwd").c_str(), buf, sizeof buf - 1);
      mine = len > 0 && (std::string(buf, static_cast<std::size_t>(len)) + "/").rfind(prefix, 0) == 0;
    }
    if (mine) out.push_back(pid);
  }
  ::closedir(d);
  return out;
}

int kill_leftovers(const std::vector<pid_t>& pids, double seconds) {
  for (pid_t pid : pids) {
    if (::getpgid(pid) == pid) signal_group(pid, SIGKILL);
    else ::kill(pid, SIGKILL);
  }
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  for (;;) {
    int left = 0;
    for (pid_t pid : pids) {
      // A zombie child of ours (same daemon process in tests) would stay "alive": reap it.
      int st;
      ::waitpid(pid, &st, WNOHANG);
      left += alive(pid) ? 1 : 0;
    }
    if (left == 0 || std::chrono::steady_clock::now() > until) return static_cast<int>(pids.size()) - left;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

std::string executable_dir() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  std::string p(buf, static_cast<std::size_t>(n));
  auto slash = p.rfind('/');
  return slash == std::string::npos ? "." : p.substr(0, slash);
}

}  // namespace loom::daemon
