// One process per rank: the same experiment trained by workers over UCX gives the losses, gradients
// and weights of the run in one process, and a worker that dies ends the run cleanly.
#include <boost/test/unit_test.hpp>

#include <signal.h>
#include <sys/prctl.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "dsl/experiment_file.hpp"
#include "dsl/load.hpp"
#include "runtime/cluster/cluster_run.hpp"
#include "runtime/daemon/bundle_collect.hpp"
#include "runtime/exec/run.hpp"

using namespace loom;

namespace {

const std::string source_dir = LOOM_SOURCE_DIR;
const std::string loom_binary = LOOM_BINARY;

pid_t spawn(const std::vector<std::string>& args) {
  pid_t pid = ::fork();
  if (pid != 0) return pid;
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  ::execv(argv[0], argv.data());
  ::_exit(127);
}

int wait_for(pid_t pid, double seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    if (::waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  return -1;
}

double relative_difference(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

// The number of processes whose command line holds `needle` (our own children included).
int processes_with(const std::string& needle) {
  // "[l]oom" so the pattern does not match the shell that runs pgrep.
  FILE* p = ::popen(("pgrep -f -c -- '[" + needle.substr(0, 1) + "]" + needle.substr(1) + "'").c_str(), "r");
  int n = 0;
  if (p) {
    if (std::fscanf(p, "%d", &n) != 1) n = 0;
    ::pclose(p);
  }
  return n;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(cluster_processes)

// The test process is rank 0 (registry and coordinator); ranks 1.. are `loom worker` processes.
BOOST_AUTO_TEST_CASE(workers_over_ucx_match_the_single_process_run) {
  for (const std::string schedule : {"1f1b", "dualpipe"}) {
    BOOST_TEST_CONTEXT(schedule) {
      const std::vector<std::string> overrides = {"schedule.file=" + source_dir + "/schedules/" + schedule + ".sched", "steps=3",
                                                  "model.layers=8", "parallel.pp=4", "parallel.ep=2"};
      auto bundle = daemon::collect_submission(source_dir + "/examples/cpu-small.toml", overrides);
      BOOST_TEST_REQUIRE(bundle.has_value(), (bundle ? "" : bundle.error().message));
      std::vector<pid_t> workers;
      cluster::cluster_options co;
      co.join_timeout_seconds = 60;
      co.collect_tensors = true;
      co.on_listening = [&](std::uint16_t port) {
        for (int r = 1; r < 8; ++r)
          workers.push_back(spawn({loom_binary, "worker", "--rendezvous", "127.0.0.1:" + std::to_string(port), "--rank",
                                   std::to_string(r), "--quiet"}));
      };
      auto distributed = cluster::run_rank_zero(*bundle, co);
      for (pid_t w : workers) BOOST_TEST(wait_for(w, 30) == 0);
      BOOST_TEST_REQUIRE(distributed.has_value(), (distributed ? "" : distributed.error().message));
      BOOST_TEST_REQUIRE(distributed->result.ok, distributed->result.error);

      // The same experiment with every rank in this process.
      const auto& e = distributed->run.experiment;
      exec::run_options opt;
      opt.collect_tensors = true;
      auto local = exec::run_experiment(e, distributed->run.schedule.sched, opt);
      BOOST_TEST_REQUIRE(local.has_value());
      BOOST_TEST_REQUIRE(local->ok, local->error);
      BOOST_TEST_REQUIRE(local->loss.size() == distributed->result.loss.size());
      for (std::size_t i = 0; i < local->loss.size(); ++i) {
        BOOST_TEST(distributed->result.loss[i] == local->loss[i], boost::test_tools::tolerance(1e-12));
        BOOST_TEST(distributed->result.grad_norm[i] == local->grad_norm[i], boost::test_tools::tolerance(1e-12));
      }
      BOOST_TEST_REQUIRE(distributed->result.grads.size() == local->grads.size());
      for (const auto& [name, grad] : local->grads) {
        BOOST_TEST(relative_difference(distributed->result.grads.at(name), grad) < 1e-12, name);
        std::vector<double> a(distributed->result.values.at(name).begin(), distributed->result.values.at(name).end());
        std::vector<double> b(local->values.at(name).begin(), local->values.at(name).end());
        BOOST_TEST(relative_difference(a, b) < 1e-12, name);
      }
    }
  }
}

// `loom run --procs`: a worker killed mid-run fails the experiment within the watchdog, naming the
// rank; the other workers stop and none is left behind.
BOOST_AUTO_TEST_CASE(a_killed_worker_fails_the_run_and_leaves_no_process) {
  const std::string out = "/tmp/loom-cluster-kill";
  const std::string log = out + ".log";
  ::unlink(log.c_str());  // no earlier run's progress may be taken for this one's
  pid_t run = ::fork();
  if (run == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    std::string exp = source_dir + "/examples/cpu-small.toml";
    const char* argv[] = {loom_binary.c_str(), "run", exp.c_str(), "--procs", "8", "--set", "steps=200", "--set", "watchdog_seconds=10",
                          "--out", out.c_str(), nullptr};
    ::execv(argv[0], const_cast<char* const*>(argv));
    ::_exit(127);
  }
  // Wait for the first finished step, then kill rank 5's process.
  const auto start = std::chrono::steady_clock::now();
  bool stepping = false;
  while (!stepping && std::chrono::steady_clock::now() - start < std::chrono::seconds(60)) {
    std::ifstream in(log);
    std::stringstream ss;
    ss << in.rdbuf();
    stepping = ss.str().find("step 1/200") != std::string::npos;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  BOOST_TEST_REQUIRE(stepping);
  BOOST_TEST_REQUIRE(std::system("pkill -9 -f -- '[l]oom worker --rendezvous .* --rank 5 '") == 0);
  const auto killed = std::chrono::steady_clock::now();
  const int status = wait_for(run, 60);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  std::ifstream in(log);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  BOOST_TEST(status == 1, text);
  BOOST_TEST(seconds < 15.0);
  // Whoever notices first names the process: the coordinator by its place ("rank 2 (ep 1)" became
  // unreachable) or a peer whose exchange with it failed, by its global rank (2 x ep + 1 = 5).
  BOOST_TEST((text.find("rank 2 (ep 1)") != std::string::npos || text.find("rank 5 is unreachable") != std::string::npos), text);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  BOOST_TEST(processes_with("loom worker --rendezvous") == 0);
}

BOOST_AUTO_TEST_SUITE_END()
