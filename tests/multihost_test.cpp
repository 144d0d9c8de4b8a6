// Several hosts on one machine: three network namespaces on a bridge (10.77.0.1-3), a loomd in each,
// the second and third joined to the first (loomd --join). An experiment submitted with --procs 4
// runs one process per rank spread over the three hosts, over UCX on TCP, and gives the losses and
// gradient norms of the single-process `loom run`. A worker killed with SIGKILL, or the link of one
// host cut, fails the run naming the rank, leaves no process behind, and every daemon still answers.
// Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2; otherwise the suite says it is skipped.
#include <boost/test/unit_test.hpp>

#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "runtime/daemon/host_table.hpp"
#include "runtime/daemon/supervisor.hpp"
#include "tests/process_support.hpp"

namespace fs = std::filesystem;
using namespace loom;
using namespace std::chrono_literals;

namespace {

const std::string source_dir = LOOM_SOURCE_DIR;
const std::string loom_bin = LOOM_BIN;
const std::string loomd_bin = LOOMD_BIN;
constexpr int port = 4242;           // every daemon has a namespace of its own: no clash
constexpr double peer_timeout = 10;  // loomd --peer-timeout (and the runs' processes)

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct cmd_result {
  int code = -1;
  std::string out, err;
};

// Runs a shell command line; stdout and stderr are captured.
cmd_result sh(const std::string& command) {
  static int n = 0;
  const std::string base = (fs::temp_directory_path() / ("loom-multihost-" + std::to_string(::getpid()) + "-" + std::to_string(n++))).string();
  int st = std::system((command + " >" + base + ".out 2>" + base + ".err").c_str());
  cmd_result r;
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  r.out = read_file(base + ".out");
  r.err = read_file(base + ".err");
  fs::remove(base + ".out");
  fs::remove(base + ".err");
  return r;
}

// Holds when network namespaces can be made here; else says the suite is skipped and why.
boost::test_tools::assertion_result netns_available(boost::unit_test::test_unit_id) {
  auto skip = [](const std::string& why) {
    std::cout << "multihost tests skipped: " << why << std::endl;
    boost::test_tools::assertion_result r(false);
    r.message() << why;
    return r;
  };
  if (::geteuid() != 0) return skip("network namespaces need root (CAP_SYS_ADMIN); run as root to test runs across hosts");
  const std::string probe = "loomprobe" + std::to_string(::getpid());
  auto made = sh("ip netns add " + probe);
  if (made.code != 0) return skip("cannot create a network namespace (ip netns add: " + made.err.substr(0, 200) + ")");
  sh("ip netns del " + probe);
  auto link = sh("ip link add lpb" + std::to_string(::getpid()) + " type bridge");
  if (link.code != 0) return skip("cannot create a bridge (ip link add: " + link.err.substr(0, 200) + ")");
  sh("ip link del lpb" + std::to_string(::getpid()));
  return true;
}

// "Hosts": network namespaces joined by veth pairs to a bridge in this namespace, each with a
// loomd (start()); everything is removed on destruction, also when a check failed half way. Names
// carry the test's pid, so parallel runs do not collide.
class lab {
 public:
  explicit lab(int hosts) : hosts_(hosts) {
    static int seq = 0;
    tag_ = std::to_string(::getpid()) + "x" + std::to_string(seq++);
    std::string tmpl = (fs::temp_directory_path() / "loom-multihost-XXXXXX").string();
    dir_ = ::mkdtemp(tmpl.data()) ? tmpl : "";
  }
  lab(const lab&) = delete;
  lab& operator=(const lab&) = delete;

  // The network, then loomd in each namespace; 2.. join 1.
  void start() {
    BOOST_TEST_REQUIRE(!dir_.empty());
    must("ip link add " + bridge() + " type bridge");
    must("ip link set " + bridge() + " up");
    for (int i = 1; i <= hosts_; ++i) {
      must("ip netns add " + ns(i));
      must("ip link add " + veth(i) + " type veth peer name " + peer(i));
      must("ip link set " + peer(i) + " netns " + ns(i));
      must("ip link set " + veth(i) + " master " + bridge());
      must("ip link set " + veth(i) + " up");
      must("ip netns exec " + ns(i) + " ip addr add " + addr(i) + "/24 dev " + peer(i));
      must("ip netns exec " + ns(i) + " ip link set " + peer(i) + " up");
      must("ip netns exec " + ns(i) + " ip link set lo up");
    }
    start_daemons();
  }

  ~lab() {
    for (auto& d : daemons_)
      if (d > 0) ::kill(d, SIGTERM);  // each stops its runs and their workers
    const auto until = std::chrono::steady_clock::now() + 20s;
    for (auto& d : daemons_) {
      while (d > 0) {
        int st;
        if (::waitpid(d, &st, WNOHANG) != 0) d = -1;
        else if (std::chrono::steady_clock::now() > until) ::kill(d, SIGKILL);
        else std::this_thread::sleep_for(20ms);
      }
    }
    if (!dir_.empty()) daemon::kill_leftovers(daemon::find_runs_under(dir_ + "/"));  // whatever a failed check left
    for (int i = 1; i <= hosts_; ++i) sh("ip netns del " + ns(i));  // takes its end of the veth pair along
    sh("ip link del " + bridge());
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
  }

  std::string ns(int i) const { return "lmh" + tag_ + "n" + std::to_string(i); }
  std::string addr(int i) const { return "10.77.0." + std::to_string(i); }
  std::string veth(int i) const { return "lmv" + tag_ + "h" + std::to_string(i); }  // this namespace's end
  std::string state(int i) const { return dir_ + "/state" + std::to_string(i); }
  const std::string& dir() const { return dir_; }

  void start_daemons() {
    for (int i = 1; i <= hosts_; ++i) {
      std::vector<std::string> args = {"ip", "netns", "exec", ns(i), "env", "UCX_TLS=tcp", "LOOM_STATE=" + state(i),
                                       loomd_bin, "--state", state(i), "--host", addr(i), "--allow-remote", "--port",
                                       std::to_string(port), "--name", "h" + std::to_string(i), "--slots", "4",
                                       "--peer-timeout", std::to_string(static_cast<int>(peer_timeout))};
      if (i > 1) args.insert(args.end(), {"--join", addr(1) + ":" + std::to_string(port), "--token-file", state(1) + "/token"});
      const std::string out = state(i) + ".out";
      const pid_t pid = test::spawn_logged(args, out);
      BOOST_TEST_REQUIRE(pid >= 0);
      daemons_.push_back(pid);
      const auto until = std::chrono::steady_clock::now() + 60s;
      while (read_file(out).find("listening on") == std::string::npos) {
        int st;
        BOOST_TEST_REQUIRE(::waitpid(pid, &st, WNOHANG) == 0, "loomd " << i << " exited at start: " << read_file(out));
        BOOST_TEST_REQUIRE((std::chrono::steady_clock::now() < until), "loomd " << i << " did not start: " << read_file(out));
        std::this_thread::sleep_for(20ms);
      }
      // Joined before the next one starts, so the head lists them in order.
      while (i > 1) {
        auto h = hosts_json(1);
        if (h.is_array() && static_cast<int>(h.size()) == i) break;
        BOOST_TEST_REQUIRE((std::chrono::steady_clock::now() < until), "loomd " << i << " did not join: " << h.dump() << "\n"
                                                                                << output(i));
        std::this_thread::sleep_for(100ms);
      }
    }
  }

  // `loom ARGS` run in host i's namespace against host i's daemon.
  cmd_result loom(int i, const std::string& args) const {
    return sh("ip netns exec " + ns(i) + " env UCX_TLS=tcp timeout 600 '" + loom_bin + "' " + args + " --daemon " + addr(i) + ":" +
              std::to_string(port) + " --token-file " + state(i) + "/token");
  }
  nlohmann::json hosts_json(int i) const {
    auto r = loom(i, "hosts --json");
    return r.code == 0 ? nlohmann::json::parse(r.out, nullptr, false) : nlohmann::json();
  }
  nlohmann::json status(std::int64_t id) const {
    auto r = loom(1, "status " + std::to_string(id) + " --json");
    BOOST_TEST_REQUIRE(r.code == 0, r.err);
    auto list = nlohmann::json::parse(r.out, nullptr, false);
    BOOST_TEST_REQUIRE((list.is_array() && list.size() == 1u), r.out);
    return list[0];
  }
  std::string output(int i) const { return read_file(state(i) + ".out"); }
  std::string log(std::int64_t id) const { return read_file(state(1) + "/experiments/" + std::to_string(id) + "/log"); }

 private:
  static void must(const std::string& cmd) {
    auto r = sh(cmd);
    BOOST_TEST_REQUIRE(r.code == 0, cmd << ": " << r.err);
  }
  std::string bridge() const { return "lmb" + tag_; }
  std::string peer(int i) const { return "lmp" + tag_ + "h" + std::to_string(i); }

  int hosts_;
  std::string tag_, dir_;
  std::vector<pid_t> daemons_;
};

// The experiment in 4 processes (pp 4 x ep 1), as `--set` arguments.
std::string experiment_args(const std::string& schedule, int steps) {
  return "--set parallel.pp=4 --set parallel.ep=1 --set steps=" + std::to_string(steps) +
         " --set schedule.file=../schedules/" + schedule + ".sched";
}

std::int64_t submit(const lab& l, const std::string& args) {
  auto r = l.loom(1, "submit " + source_dir + "/examples/cpu-small.toml --procs 4 " + args);
  BOOST_TEST_REQUIRE(r.code == 0, r.err);
  return std::stoll(r.out);
}

// The loom processes of this lab (rank 0, workers) still running.
std::vector<pid_t> lab_processes(const lab& l) { return daemon::find_runs_under(l.dir() + "/"); }

bool none_left(const lab& l, std::chrono::seconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!lab_processes(l).empty()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(100ms);
  }
  return true;
}

// The process of `loom worker ... --rank R` that host i's daemon started.
pid_t worker_of(const lab& l, int host, int rank) {
  for (pid_t pid : daemon::find_runs_under(l.state(host) + "/workers/")) {
    std::string cmd = read_file("/proc/" + std::to_string(pid) + "/cmdline");
    for (auto& c : cmd)
      if (c == '\0') c = ' ';
    if (cmd.find(" --rank " + std::to_string(rank) + " ") != std::string::npos) return pid;
  }
  return -1;
}

// Waits for the run's first finished step in its log.
void wait_for_first_step(const lab& l, std::int64_t id) {
  const auto until = std::chrono::steady_clock::now() + 180s;
  while (l.log(id).find("step 1/") == std::string::npos) {
    auto s = l.status(id);
    BOOST_TEST_REQUIRE(s.value("status", "") != "failed", "the run failed before its first step: " << s.dump() << "\n" << l.log(id));
    BOOST_TEST_REQUIRE((std::chrono::steady_clock::now() < until), "no step finished: " << l.log(id));
    std::this_thread::sleep_for(100ms);
  }
}

nlohmann::json wait_until_final(const lab& l, std::int64_t id, std::chrono::seconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  for (;;) {
    auto s = l.status(id);
    const std::string st = s.value("status", "");
    if (st != "queued" && st != "running") return s;
    BOOST_TEST_REQUIRE((std::chrono::steady_clock::now() < until), "the run did not end: " << s.dump() << "\n" << l.log(id));
    std::this_thread::sleep_for(200ms);
  }
}

void every_daemon_answers(const lab& l, int hosts) {
  for (int i = 1; i <= hosts; ++i) {
    auto r = l.loom(i, "status");
    BOOST_TEST(r.code == 0, "loomd " << i << " does not answer: " << r.err << "\n" << l.output(i));
  }
}

std::vector<double> numbers(const nlohmann::json& j, const char* key) {
  std::vector<double> out;
  if (j.contains(key))
    for (const auto& v : j[key]) out.push_back(v.get<double>());
  return out;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(multihost, *boost::unit_test::precondition(netns_available))

// Where ranks go: round-robin over the head and the joined hosts, rank 0 on the head, within slots.
BOOST_AUTO_TEST_CASE(ranks_go_round_robin_within_slots) {
  using daemon::place_ranks;
  auto p = place_ranks(4, 0, {{"a", 2}, {"b", 2}, {"c", 2}});
  BOOST_TEST_REQUIRE(p.has_value());
  BOOST_TEST((*p == std::vector<int>{0, 1, 2, 0}));
  auto two = place_ranks(4, 2, {{"a", 4}, {"b", 4}, {"c", 4}});
  BOOST_TEST((two.value() == std::vector<int>{0, 1, 0, 1}));
  auto full = place_ranks(5, 0, {{"a", 1}, {"b", 0}, {"c", 4}});  // b has no free slot: skipped
  BOOST_TEST((full.value() == std::vector<int>{0, 2, 2, 2, 2}));
  BOOST_TEST(!place_ranks(8, 0, {{"a", 2}, {"b", 2}}).has_value());
  auto few = place_ranks(4, 3, {{"a", 2}, {"b", 2}});
  BOOST_TEST_REQUIRE(!few.has_value());
  BOOST_TEST(few.error().message.find("asks for 3 hosts") != std::string::npos, few.error().message);
}

// The acceptance run: 4 processes over 3 hosts give the single-process losses and gradient
// norms, for 1F1B and for DualPipe; afterwards no process of the run is left.
BOOST_AUTO_TEST_CASE(a_run_over_three_hosts_matches_the_single_process_run) {
  lab l(3);
  l.start();
  auto hosts = l.hosts_json(1);
  BOOST_TEST(hosts[1]["name"] == "h2");
  BOOST_TEST(hosts[1]["address"] == l.addr(2));
  for (const std::string schedule : {"1f1b", "dualpipe"}) {
    BOOST_TEST_CONTEXT(schedule) {
      const std::string args = experiment_args(schedule, 3);
      auto run = l.loom(1, "submit " + source_dir + "/examples/cpu-small.toml --procs 4 --hosts 3 --wait " + args);
      BOOST_TEST_REQUIRE(run.code == 0, run.err);
      const std::int64_t id = std::stoll(run.out);
      BOOST_TEST(l.log(id).find("4 processes over 3 hosts: ranks 0,3 on h1 (this daemon); rank 1 on h2; rank 2 on h3") !=
                     std::string::npos,
                 l.log(id));
      const std::string saved = l.dir() + "/results-" + schedule;
      auto res = l.loom(1, "results " + std::to_string(id) + " --save " + saved);
      BOOST_TEST_REQUIRE(res.code == 0, res.err);
      auto spread = nlohmann::json::parse(read_file(saved + "/report.json"), nullptr, false);

      const std::string ref_dir = l.dir() + "/single-" + schedule;
      auto single = sh("'" + loom_bin + "' run " + source_dir + "/examples/cpu-small.toml -q " + args + " --out " + ref_dir);
      BOOST_TEST_REQUIRE(single.code == 0, single.err);
      auto ref = nlohmann::json::parse(read_file(ref_dir + "/report.json"), nullptr, false);

      const auto loss = numbers(spread, "loss"), ref_loss = numbers(ref, "loss");
      const auto norm = numbers(spread, "grad_norm"), ref_norm = numbers(ref, "grad_norm");
      BOOST_TEST_REQUIRE(ref_loss.size() == 3u);
      BOOST_TEST_REQUIRE(loss.size() == ref_loss.size());
      BOOST_TEST_REQUIRE(norm.size() == ref_norm.size());
      for (std::size_t i = 0; i < loss.size(); ++i) {
        BOOST_TEST(loss[i] == ref_loss[i], boost::test_tools::tolerance(1e-12));
        BOOST_TEST(norm[i] == ref_norm[i], boost::test_tools::tolerance(1e-12));
      }
      BOOST_TEST(none_left(l, 30s), "processes of the run are left");
    }
  }
  every_daemon_answers(l, 3);
}

// kill -9 of a worker on a joined host after the first step: the run fails within the watchdog,
// naming the rank; no process of the run stays; every daemon answers.
BOOST_AUTO_TEST_CASE(a_killed_worker_fails_the_run_and_leaves_no_process) {
  lab l(3);
  l.start();
  const auto id = submit(l, experiment_args("1f1b", 200) + " --set watchdog_seconds=10");
  wait_for_first_step(l, id);
  const pid_t victim = worker_of(l, 2, 1);
  BOOST_TEST_REQUIRE(victim > 0, "no worker of rank 1 on host 2");
  BOOST_TEST_REQUIRE(::kill(victim, SIGKILL) == 0);
  const auto killed = std::chrono::steady_clock::now();
  auto s = wait_until_final(l, id, 120s);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  BOOST_TEST(s["status"] == "failed", s.dump());
  const std::string error = s.value("error", "");
  BOOST_TEST(error.find("rank 1") != std::string::npos, error << "\n" << l.log(id));
  BOOST_TEST(seconds < 60.0, "the run took " << seconds << " s to fail");
  BOOST_TEST(none_left(l, 30s), "processes of the run are left: " << lab_processes(l).size());
  every_daemon_answers(l, 3);
  BOOST_TEST(l.hosts_json(1).size() == 3u, "a joined daemon was lost: " << l.hosts_json(1).dump());
}

// The link of host 3 goes down mid-run: the run fails naming rank 2 (which ran there) once the
// peer timeout or the watchdog gives up on it; every process of the run ends (host 3's daemon stops
// its workers when it loses the head); every daemon answers; host 3 joins again once the link is up.
BOOST_AUTO_TEST_CASE(a_cut_link_fails_the_run_and_leaves_no_process) {
  lab l(3);
  l.start();
  const auto id = submit(l, experiment_args("1f1b", 200) + " --set watchdog_seconds=10");
  wait_for_first_step(l, id);
  BOOST_TEST_REQUIRE(sh("ip link set " + l.veth(3) + " down").code == 0);
  const auto cut = std::chrono::steady_clock::now();
  auto s = wait_until_final(l, id, 120s);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - cut).count();
  BOOST_TEST(s["status"] == "failed", s.dump());
  const std::string error = s.value("error", "");
  BOOST_TEST(error.find("rank 2") != std::string::npos, error << "\n" << l.log(id));
  BOOST_TEST(seconds < 90.0, "the run took " << seconds << " s to fail");
  BOOST_TEST(none_left(l, 60s), "processes of the run are left: " << lab_processes(l).size());
  every_daemon_answers(l, 3);
  // Back on the network, host 3 joins the head again.
  BOOST_TEST_REQUIRE(sh("ip link set " + l.veth(3) + " up").code == 0);
  const auto until = std::chrono::steady_clock::now() + 60s;
  while (l.hosts_json(1).size() != 3u && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(200ms);
  BOOST_TEST(l.hosts_json(1).size() == 3u, "host 3 did not join again: " << l.hosts_json(1).dump() << "\n" << l.output(3));
}

BOOST_AUTO_TEST_SUITE_END()
