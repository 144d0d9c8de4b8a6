// The runtime daemon: its store survives reopening and kill -9, submissions are validated through
// the submitted files only, loomd (a real process) loses nothing when killed and restarted, refuses
// a wrong token, keeps serving whatever bytes arrive on its port, and `loom compare` writes a page
// that renders in a headless browser.
#include <boost/test/unit_test.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "runtime/daemon/basp_framing.hpp"
#include "runtime/daemon/bundle_check.hpp"
#include "runtime/daemon/bundle_collect.hpp"
#include "runtime/daemon/compare_page.hpp"
#include "runtime/daemon/gate.hpp"
#include "runtime/daemon/recovery.hpp"
#include "runtime/daemon/state_dir.hpp"
#include "runtime/daemon/store.hpp"
#include "runtime/daemon/supervisor.hpp"
#include "runtime/daemon/token.hpp"
#include "tests/process_support.hpp"

namespace fs = std::filesystem;
using namespace loom;
using namespace loom::daemon;
using namespace std::chrono_literals;

namespace {

const std::string source_dir = LOOM_SOURCE_DIR;
const std::string loom_bin = LOOM_BIN;
const std::string loomd_bin = LOOMD_BIN;

// A fresh folder under the system's temporary folder, removed at the end of the test.
struct temp_dir {
  std::string path;
  temp_dir() {
    std::string tmpl = (fs::temp_directory_path() / "loom-daemon-test-XXXXXX").string();
    path = ::mkdtemp(tmpl.data()) ? tmpl : "";
    BOOST_TEST_REQUIRE(!path.empty());
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return path + "/" + name; }
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

submission small_submission() {
  auto s = collect_submission(source_dir + "/examples/cpu-small.toml", {"steps=1"});
  BOOST_TEST_REQUIRE(s.has_value(), (s ? "" : s.error().message));
  return *s;
}

// --- processes ---

struct cmd_result {
  int code = -1;
  std::string out, err;
};

// Runs a shell command line with LOOM_STATE pointing at `state` (and no other daemon settings).
cmd_result run(const std::string& state, const std::string& command) {
  static int n = 0;
  const std::string base = (fs::temp_directory_path() / ("loom-daemon-test-" + std::to_string(::getpid()) + "-" + std::to_string(n++))).string();
  std::string line = "env -u LOOM_DAEMON -u LOOM_TOKEN_FILE LOOM_STATE='" + state + "' " + command + " >" + base + ".out 2>" + base + ".err";
  int st = std::system(line.c_str());
  cmd_result r;
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  r.out = read_file(base + ".out");
  r.err = read_file(base + ".err");
  fs::remove(base + ".out");
  fs::remove(base + ".err");
  return r;
}

std::string loom_cmd(const std::string& args) { return "'" + loom_bin + "' " + args; }

// loomd as a child process on a state folder, on a free port.
class daemon_process {
 public:
  explicit daemon_process(std::string state) : state_(std::move(state)) {}
  ~daemon_process() {
    if (pid_ > 0) kill9();
  }

  void start(const std::vector<std::string>& extra = {}) {
    BOOST_TEST_REQUIRE(pid_ <= 0);
    const std::string out = state_ + ".loomd.out";
    std::error_code ec;
    fs::remove(out, ec);
    std::vector<std::string> args = {loomd_bin, "--state", state_, "--port", "0"};
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = test::spawn_logged(args, out, [] { ::unsetenv("LOOM_STATE"); });
    BOOST_TEST_REQUIRE(pid_ >= 0);
    // Ready when it says where it listens.
    const auto until = std::chrono::steady_clock::now() + 60s;
    while (read_file(out).find("listening on") == std::string::npos) {
      int st;
      BOOST_TEST_REQUIRE(::waitpid(pid_, &st, WNOHANG) == 0, "loomd exited at start: " << read_file(out));
      BOOST_TEST_REQUIRE((std::chrono::steady_clock::now() < until), "loomd did not start: " << read_file(out));
      std::this_thread::sleep_for(20ms);
    }
  }
  void kill9() {
    ::kill(pid_, SIGKILL);
    int st;
    ::waitpid(pid_, &st, 0);
    pid_ = -1;
  }
  // SIGTERM; returns loomd's exit status.
  int term() {
    ::kill(pid_, SIGTERM);
    int st = 0;
    ::waitpid(pid_, &st, 0);
    pid_ = -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  }
  std::string output() const { return read_file(state_ + ".loomd.out"); }
  pid_t pid() const { return pid_; }

 private:
  std::string state_;
  pid_t pid_ = -1;
};

nlohmann::json status_json(const std::string& state) {
  auto r = run(state, loom_cmd("status --json"));
  BOOST_TEST_REQUIRE(r.code == 0, r.err);
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  BOOST_TEST_REQUIRE(j.is_array(), r.out);
  return j;
}

nlohmann::json find(const nlohmann::json& list, std::int64_t id) {
  for (const auto& x : list)
    if (x["id"].get<std::int64_t>() == id) return x;
  return {};
}

// Waits until `pred(status list)` holds.
template <class Pred>
nlohmann::json wait_for(const std::string& state, Pred pred, std::chrono::seconds limit, const std::string& what) {
  const auto until = std::chrono::steady_clock::now() + limit;
  for (;;) {
    auto j = status_json(state);
    if (pred(j)) return j;
    BOOST_TEST_REQUIRE((std::chrono::steady_clock::now() < until), "timed out waiting for " << what << ": " << j.dump());
    std::this_thread::sleep_for(100ms);
  }
}

std::int64_t submit(const std::string& state, const std::string& args) {
  auto r = run(state, loom_cmd("submit " + source_dir + "/examples/cpu-small.toml " + args));
  BOOST_TEST_REQUIRE(r.code == 0, r.err);
  return std::stoll(r.out);
}

// The permission bits of a file, e.g. 0600.
unsigned mode_of(const std::string& path) { return static_cast<unsigned>(fs::status(path).permissions() & fs::perms::all); }

bool process_alive(pid_t pid) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return false;
  std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  auto close = stat.rfind(')');
  return !(close != std::string::npos && close + 2 < stat.size() && stat[close + 2] == 'Z');
}

// Holds when Debian's chromium is installed; else says the browser check is skipped and why.
boost::test_tools::assertion_result chromium_available(boost::unit_test::test_unit_id) {
  for (const char* p : {"/usr/bin/chromium", "/usr/bin/chromium-browser"})
    if (::access(p, X_OK) == 0) return true;
  std::cout << "chromium not installed: the compare page is not rendered in a browser (skipped; apt-get install chromium)"
            << std::endl;
  boost::test_tools::assertion_result r(false);
  r.message() << "chromium is not installed";
  return r;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(daemon_store)

BOOST_AUTO_TEST_CASE(experiments_survive_reopening) {
  temp_dir d;
  const std::string db = d / "experiments.db";
  std::int64_t a = 0, b = 0;
  {
    auto s = store::open(db);
    BOOST_TEST_REQUIRE(s.has_value(), (s ? "" : s.error().message));
    auto sub = small_submission();
    auto ia = (*s)->insert({"cpu-small", sub, 100});
    auto ib = (*s)->insert({"second", sub, 101});
    BOOST_TEST_REQUIRE(ia.has_value());
    BOOST_TEST_REQUIRE(ib.has_value());
    a = *ia;
    b = *ib;
    BOOST_TEST(b > a);
    BOOST_TEST((*s)->mark_running(a, 102, "/r/a").value() == true);
    BOOST_TEST((*s)->set_pid(a, 4242).has_value());
  }
  auto s = store::open(db);
  BOOST_TEST_REQUIRE(s.has_value());
  auto all = (*s)->list();
  BOOST_TEST_REQUIRE(all.has_value());
  BOOST_TEST_REQUIRE(all->size() == 2u);
  BOOST_TEST((*all)[0].status == "running");
  BOOST_TEST((*all)[0].pid == 4242);
  BOOST_TEST((*all)[0].result_dir == "/r/a");
  BOOST_TEST((*all)[0].overrides == std::vector<std::string>{"steps=1"});
  BOOST_TEST((*all)[1].status == "queued");
  auto sub = (*s)->submitted(a);
  BOOST_TEST_REQUIRE(sub.has_value());
  BOOST_TEST(sub->experiment_text == small_submission().experiment_text);
  BOOST_TEST(sub->files.size() == small_submission().files.size());
  BOOST_TEST(*(*s)->next_queued().value() == b);
}

BOOST_AUTO_TEST_CASE(status_changes_follow_the_lifecycle) {
  temp_dir d;
  auto s = store::open(d / "experiments.db");
  BOOST_TEST_REQUIRE(s.has_value());
  auto& db = **s;
  auto id = *db.insert({"x", small_submission(), 1});
  BOOST_TEST(allowed_transition("queued", "running"));
  BOOST_TEST(!allowed_transition("done", "running"));
  BOOST_TEST(!allowed_transition("queued", "done"));
  BOOST_TEST(!db.finish(id, "queued", "done", 2, "").has_value());  // not a move the lifecycle has
  BOOST_TEST(*db.finish(id, "running", "done", 2, "") == false);      // it is not running
  BOOST_TEST(*db.mark_running(id, 3, "/out") == true);
  BOOST_TEST(*db.mark_running(id, 3, "/out") == false);  // only from queued
  BOOST_TEST(*db.finish(id, "running", "failed", 4, "it broke", 1) == true);
  BOOST_TEST(*db.finish(id, "running", "done", 5, "") == false);  // final states never change
  auto x = *db.get(id).value();
  BOOST_TEST(x.status == "failed");
  BOOST_TEST(x.error == "it broke");
  BOOST_TEST(x.exit_code == 1);
  BOOST_TEST(x.finished_at == 4.0);
}

// A writer killed with SIGKILL at an arbitrary moment: everything it had committed is there, and the
// store opens cleanly.
BOOST_AUTO_TEST_CASE(commits_survive_kill_9) {
  temp_dir d;
  const std::string db = d / "experiments.db";
  int pipefd[2];
  BOOST_TEST_REQUIRE(::pipe(pipefd) == 0);
  std::cout.flush();
  std::fflush(nullptr);
  pid_t pid = ::fork();
  BOOST_TEST_REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(pipefd[0]);
    auto s = store::open(db);
    if (!s) ::_exit(1);
    submission sub;
    sub.experiment_text = "name = \"x\"";
    for (;;) {
      auto id = (*s)->insert({"x", sub, 1});
      if (!id) ::_exit(2);
      (void)(*s)->mark_running(*id, 2, "/o");
      std::int64_t v = *id;
      if (::write(pipefd[1], &v, sizeof v) != sizeof v) ::_exit(3);
    }
  }
  ::close(pipefd[1]);
  std::this_thread::sleep_for(300ms);
  ::kill(pid, SIGKILL);
  int st;
  ::waitpid(pid, &st, 0);
  std::set<std::int64_t> committed;
  std::int64_t v;
  while (::read(pipefd[0], &v, sizeof v) == sizeof v) committed.insert(v);
  ::close(pipefd[0]);
  BOOST_TEST_REQUIRE(!committed.empty());
  auto s = store::open(db);
  BOOST_TEST_REQUIRE(s.has_value(), (s ? "" : s.error().message));
  auto all = (*s)->list();
  BOOST_TEST_REQUIRE(all.has_value());
  std::set<std::int64_t> present;
  for (const auto& x : *all) present.insert(x.id);
  for (auto id : committed) BOOST_TEST(present.count(id) == 1u, "experiment " << id << " was committed but is gone");
  for (const auto& x : *all)
    if (committed.count(x.id)) BOOST_TEST(x.status == "running");
  // Ids are never reused, even after a crash.
  auto next = (*s)->insert({"y", submission{}, 3});
  BOOST_TEST_REQUIRE(next.has_value());
  BOOST_TEST(*next > *committed.rbegin());
}

BOOST_AUTO_TEST_CASE(recovery_interrupts_what_was_running) {
  temp_dir d;
  auto paths = state_layout(d.path);
  fs::create_directories(paths.experiments);
  auto s = store::open(paths.db);
  BOOST_TEST_REQUIRE(s.has_value());
  auto& db = **s;
  auto a = *db.insert({"a", small_submission(), 1});
  auto b = *db.insert({"b", small_submission(), 1});
  BOOST_TEST(*db.mark_running(a, 2, "/o"));
  auto r = recover(db, paths, 1000);
  BOOST_TEST_REQUIRE(r.has_value());
  BOOST_TEST(r->interrupted == std::vector<std::int64_t>{a});
  BOOST_TEST(r->queued == 1u);
  auto x = *db.get(a).value();
  BOOST_TEST(x.status == "interrupted");
  BOOST_TEST(x.error.find("the daemon stopped while it ran (restarted at") == 0u, x.error);
  BOOST_TEST(db.get(b).value()->status == "queued");
}

BOOST_AUTO_TEST_CASE(tokens_and_endpoints) {
  temp_dir d;
  const std::string path = d / "token";
  auto t = load_or_create_token(path);
  BOOST_TEST_REQUIRE(t.has_value());
  BOOST_TEST(t->size() == 64u);
  BOOST_TEST(mode_of(path) == 0600u);
  BOOST_TEST(*load_or_create_token(path) == *t);  // made once
  BOOST_TEST(tokens_equal(*t, *t));
  BOOST_TEST(!tokens_equal(*t, ""));
  BOOST_TEST(!tokens_equal(*t, t->substr(0, 63)));
  BOOST_TEST(!tokens_equal(*t, *t + "0"));
  BOOST_TEST(!tokens_equal("", ""));
  auto e = parse_endpoint("127.0.0.1:4242\n");
  BOOST_TEST_REQUIRE(e.has_value());
  BOOST_TEST(e->host == "127.0.0.1");
  BOOST_TEST(e->port == 4242);
  BOOST_TEST(parse_endpoint("[::1]:80")->host == "::1");
  BOOST_TEST(!parse_endpoint("localhost").has_value());
  BOOST_TEST(!parse_endpoint("h:99999").has_value());
  BOOST_TEST(is_loopback("127.0.0.1"));
  BOOST_TEST(is_loopback("::1"));
  BOOST_TEST(!is_loopback("0.0.0.0"));
  BOOST_TEST(!is_loopback("10.1.2.3"));
}

// A run's child yields the CPU as loomd was told (--nice N, --idle), so `loom status` stays quick.
BOOST_AUTO_TEST_CASE(children_run_at_the_priority_asked_for) {
  temp_dir d;
  auto started = [&](run_priority priority) {
    launch_spec spec;
    spec.program = "/bin/sleep";
    spec.args = {"30"};
    spec.log_path = d / "log";
    spec.priority = priority;
    auto pid = launch(spec);
    BOOST_TEST_REQUIRE(pid.has_value());
    // The child sets its priority before exec: wait until it runs sleep.
    const std::string cmdline = "/proc/" + std::to_string(*pid) + "/cmdline";
    for (int i = 0; i < 500 && read_file(cmdline).rfind("/bin/sleep", 0) != 0; ++i) std::this_thread::sleep_for(10ms);
    BOOST_TEST(read_file(cmdline).rfind("/bin/sleep", 0) == 0u);
    return *pid;
  };
  auto stop = [](pid_t pid) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  };
  const int own_nice = ::getpriority(PRIO_PROCESS, 0);

  pid_t idle = started({3, true});
  BOOST_TEST(::sched_getscheduler(idle) == SCHED_IDLE);
  BOOST_TEST(::getpriority(PRIO_PROCESS, static_cast<id_t>(idle)) == std::min(own_nice + 3, 19));
  stop(idle);

  pid_t plain = started({});
  BOOST_TEST(::sched_getscheduler(plain) == ::sched_getscheduler(0));
  BOOST_TEST(::getpriority(PRIO_PROCESS, static_cast<id_t>(plain)) == own_nice);
  stop(plain);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(daemon_submission)

BOOST_AUTO_TEST_CASE(a_good_submission_carries_its_import_closure) {
  auto s = collect_submission(source_dir + "/examples/cpu-small.toml", {"schedule.file=../schedules/dualpipe.sched"});
  BOOST_TEST_REQUIRE(s.has_value(), (s ? "" : s.error().message));
  std::set<std::string> names;
  for (const auto& f : s->files) names.insert(f.name);
  BOOST_TEST(s->schedule_main == "dualpipe.sched");
  BOOST_TEST(names.count("dualpipe.sched") == 1u);
  BOOST_TEST(names.count("overlap/deepseek-v3.sched") == 1u);
  BOOST_TEST(names.count("programs/dualpipe-body.sched") == 1u);
  auto v = validate_submission(*s);
  BOOST_TEST_REQUIRE(v.has_value(), (v ? "" : v.error().message));
  BOOST_TEST(v->summary.find("cpu-small") == 0u, v->summary);
  auto o = run_overrides(*s, "/state/experiments/7/files");
  BOOST_TEST(o.back() == "schedule.file=\"/state/experiments/7/files/dualpipe.sched\"");
}

BOOST_AUTO_TEST_CASE(a_bad_schedule_is_refused_with_its_location) {
  auto s = small_submission();
  s.files.front().contents = "schedule broken(ranks, microbatches) {\n  rank r { F 0 ;; }\n  oops\n}\n";
  auto v = validate_submission(s);
  BOOST_TEST_REQUIRE(!v.has_value());
  const std::string want = s.schedule_main + ":";
  BOOST_TEST(v.error().message.find(want) == 0u, v.error().message);
  BOOST_TEST(v.error().message.find(": error: ") != std::string::npos, v.error().message);
  // The experiment file too: toml's located error names the file as the client named it.
  auto t = small_submission();
  t.experiment_text = "name = \"x\"\nsteps = \n";
  auto w = validate_submission(t);
  BOOST_TEST_REQUIRE(!w.has_value());
  BOOST_TEST(w.error().message.find("cpu-small.toml") != std::string::npos, w.error().message);
  // And an experiment that does not fit its schedule.
  auto u = collect_submission(source_dir + "/examples/cpu-small.toml", {"parallel.pp=3"});
  BOOST_TEST_REQUIRE(u.has_value());
  auto x = validate_submission(*u);
  BOOST_TEST_REQUIRE(!x.has_value());
  BOOST_TEST(x.error().message.find("model.layers") != std::string::npos, x.error().message);
}

BOOST_AUTO_TEST_CASE(sizes_and_names_are_capped) {
  auto s = small_submission();
  s.files.front().contents = std::string(max_file_bytes + 1, ' ');
  BOOST_TEST(validate_submission(s).error().code == errc::limit_exceeded);
  auto t = small_submission();
  for (int i = 0; i < static_cast<int>(max_files) + 1; ++i) t.files.push_back({"extra" + std::to_string(i) + ".sched", "x"});
  BOOST_TEST(validate_submission(t).error().code == errc::limit_exceeded);
  auto u = small_submission();
  for (int i = 0; i < 5; ++i) u.files.push_back({"big" + std::to_string(i) + ".sched", std::string(max_file_bytes - 10, ' ')});
  BOOST_TEST(validate_submission(u).error().message.find("over the limit") != std::string::npos);
  auto e = small_submission();
  e.experiment_text = std::string(max_file_bytes + 1, '#');
  BOOST_TEST(validate_submission(e).error().code == errc::limit_exceeded);
  for (const char* bad : {"../x.sched", "/etc/passwd", "a/../../b", "a//b", "./a", "a\\b", "", "a\nb"}) {
    auto v = small_submission();
    v.files.push_back({bad, "x"});
    auto r = validate_submission(v);
    BOOST_TEST_REQUIRE(!r.has_value(), "accepted the name '" << bad << "'");
    BOOST_TEST(r.error().message.find("refused: file name") == 0u, r.error().message);
  }
  auto dup = small_submission();
  dup.files.push_back(dup.files.front());
  BOOST_TEST(!validate_submission(dup).has_value());
}

// No file of a submission can make the daemon read a path of its choosing: imports resolve only
// among the submitted files.
BOOST_AUTO_TEST_CASE(imports_cannot_reach_other_paths) {
  const std::string body =
      "schedule onef1b(ranks, microbatches) {\n  pipeline main stages = ranks\n  rank r {\n"
      "    repeat microbatches { F 0 }\n    repeat microbatches { B 0 }\n  }\n}\n";
  for (const std::string& target : std::vector<std::string>{"../../etc/passwd", "/etc/passwd", "../../../../../../etc/hostname",
                                                         source_dir + "/schedules/1f1b.sched", "not-submitted.sched"}) {
    auto s = small_submission();
    s.files.front().contents = "import \"" + target + "\"\n" + body;
    auto v = validate_submission(s);
    BOOST_TEST_REQUIRE(!v.has_value(), "the import of " << target << " was accepted");
    const auto& m = v.error().message;
    BOOST_TEST((m.find("outside the submitted files") != std::string::npos ||
                m.find("not among the submitted files") != std::string::npos),
               m);
    BOOST_TEST(m.find("root:") == std::string::npos, "the daemon read a file it was not sent: " << m);
  }
  // The same import is fine when the file is part of the submission.
  auto s = small_submission();
  s.files.front().contents = "import \"lib/empty.sched\"\n" + body;
  s.files.push_back({"lib/empty.sched", "// nothing but a comment\n"});
  auto v = validate_submission(s);
  BOOST_TEST(v.has_value(), (v ? "" : v.error().message));
  // The reader itself: normalized names only, nothing outside.
  source_set sources;
  auto read = bundle_reader(s);
  BOOST_TEST(read(sources, "lib/../lib/empty.sched").has_value());
  BOOST_TEST(!read(sources, "../lib/empty.sched").has_value());
  BOOST_TEST(!read(sources, "/lib/empty.sched").has_value());
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(daemon_end_to_end)

// The issue's acceptance run: 10 submissions, kill -9 of the daemon while one runs, a restart on the
// same state: every id is still listed and reaches a final state, the one that ran says why it was
// interrupted, and its leftover process is gone. Then: a wrong token, SIGTERM, cancel.
BOOST_AUTO_TEST_CASE(kill_9_and_restart_lose_nothing) {
  temp_dir d;
  const std::string state = d / "state";
  daemon_process loomd(state);
  loomd.start();
  BOOST_TEST(mode_of(state + "/token") == 0600u);
  BOOST_TEST(parse_endpoint(read_file(state + "/endpoint")).has_value());

  // The first one runs long enough to be killed in the middle; the other nine are quick.
  std::vector<std::int64_t> ids;
  ids.push_back(submit(state, "--set steps=200"));
  for (int i = 0; i < 9; ++i) ids.push_back(submit(state, "--set steps=1"));
  BOOST_TEST(std::set<std::int64_t>(ids.begin(), ids.end()).size() == 10u);
  auto j = wait_for(state, [&](const nlohmann::json& l) { return find(l, ids[0]).value("status", "") == "running" &&
                                                                 find(l, ids[0]).value("pid", 0) > 0; },
                    60s, "the first experiment to run");
  const pid_t child = static_cast<pid_t>(find(j, ids[0])["pid"].get<std::int64_t>());
  for (std::size_t i = 1; i < ids.size(); ++i) BOOST_TEST(find(j, ids[i])["status"] == "queued");

  loomd.kill9();
  BOOST_TEST(process_alive(child), "the run should outlive a killed daemon (its own session)");
  auto refused = run(state, loom_cmd("status"));
  BOOST_TEST(refused.code == 1);
  BOOST_TEST(refused.err.find("no daemon at 127.0.0.1:") != std::string::npos, refused.err);
  BOOST_TEST(refused.err.find("start one with loomd --state DIR") != std::string::npos, refused.err);

  loomd.start();
  BOOST_TEST(loomd.output().find("was running when the daemon stopped") != std::string::npos, loomd.output());
  for (int i = 0; i < 100 && process_alive(child); ++i) std::this_thread::sleep_for(50ms);
  BOOST_TEST(!process_alive(child), "the restarted daemon must end the leftover run");
  auto fin = wait_for(state, [&](const nlohmann::json& l) {
    for (auto id : ids)
      if (!is_final_status(find(l, id).value("status", ""))) return false;
    return true;
  }, 240s, "every experiment to end");
  auto first = find(fin, ids[0]);
  BOOST_TEST(first["status"] == "interrupted");
  BOOST_TEST(first["error"].get<std::string>().find("the daemon stopped while it ran (restarted at") == 0u, first.dump());
  for (std::size_t i = 1; i < ids.size(); ++i) BOOST_TEST(find(fin, ids[i])["status"] == "done", find(fin, ids[i]).dump());

  // Results and logs of a finished one come through the daemon.
  auto res = run(state, loom_cmd("results " + std::to_string(ids[1])));
  BOOST_TEST(res.code == 0, res.err);
  BOOST_TEST(res.out.find("makespan") != std::string::npos, res.out);
  auto log = run(state, loom_cmd("logs " + std::to_string(ids[1])));
  BOOST_TEST(log.out.find("step 1/1") != std::string::npos, log.out);
  auto list = run(state, loom_cmd("list"));
  for (auto id : ids) BOOST_TEST(list.out.find("\n" + std::to_string(id) + " ") != std::string::npos, list.out);

  // A wrong token, and none at all, are refused with a clear message.
  write_file(d / "wrong-token", std::string(64, 'a') + "\n");
  auto wrong = run(state, loom_cmd("status --token-file " + (d / "wrong-token")));
  BOOST_TEST(wrong.code == 1);
  BOOST_TEST(wrong.err.find("refused: the token does not match") != std::string::npos, wrong.err);
  auto wrong_submit = run(state, loom_cmd("submit " + source_dir + "/examples/cpu-small.toml --token-file " + (d / "wrong-token")));
  BOOST_TEST(wrong_submit.code == 1);
  BOOST_TEST(wrong_submit.err.find("refused: the token does not match") != std::string::npos, wrong_submit.err);
  auto none = run(state, loom_cmd("status --token-file " + (d / "no-such-token")));
  BOOST_TEST(none.code == 1);
  BOOST_TEST(none.err.find("no token") != std::string::npos, none.err);

  // A bad schedule is refused at submit time with the located error `loom check` prints.
  write_file(d / "bad/bad.sched", "schedule bad(ranks, microbatches) {\n  rank r { F 0 }\n  nonsense here\n}\n");
  write_file(d / "bad/exp.toml", read_file(source_dir + "/examples/cpu-small.toml"));
  auto bad = run(state, loom_cmd("submit " + (d / "bad/exp.toml") + " --set schedule.file=bad.sched"));
  auto check = run(state, loom_cmd("check " + (d / "bad/bad.sched") + " --set ranks=4 --set microbatches=8"));
  BOOST_TEST(bad.code == 1);
  BOOST_TEST(bad.err.find("bad.sched:3:") != std::string::npos, bad.err);
  BOOST_TEST(check.err.find("bad.sched:3:") != std::string::npos, check.err);

  // A second daemon on the same state is refused.
  auto second = run(state, "'" + loomd_bin + "' --state '" + state + "' --port 0");
  BOOST_TEST(second.code == 1);
  BOOST_TEST(second.err.find("another loomd") != std::string::npos, second.err);
  // Only loopback without --allow-remote.
  auto remote = run(state, "'" + loomd_bin + "' --state '" + (d / "other") + "' --host 0.0.0.0 --port 0");
  BOOST_TEST(remote.code == 2);
  BOOST_TEST(remote.err.find("--allow-remote") != std::string::npos, remote.err);

  // A run that crashes fails alone: the daemon records why and goes on.
  auto crashing = submit(state, "--set steps=200");
  auto c0 = wait_for(state, [&](const nlohmann::json& l) { return find(l, crashing).value("status", "") == "running" &&
                                                               find(l, crashing).value("pid", 0) > 0; }, 60s, "a run");
  // SIGABRT, as an assert would: UCX's error handler (and AddressSanitizer's) catch SIGSEGV and turn it
  // into an abort with a backtrace, so the signal the daemon reports would depend on the build.
  ::kill(static_cast<pid_t>(find(c0, crashing)["pid"].get<std::int64_t>()), SIGABRT);
  auto crashed = wait_for(state, [&](const nlohmann::json& l) { return is_final_status(find(l, crashing).value("status", "")); },
                          60s, "the crashed run to be recorded");
  BOOST_TEST(find(crashed, crashing)["status"] == "failed");
  BOOST_TEST(find(crashed, crashing)["error"].get<std::string>().find("signal 6") != std::string::npos,
             find(crashed, crashing).dump());

  // Cancel: a queued one never starts, a running one stops.
  auto longer = submit(state, "--set steps=200");
  auto queued = submit(state, "--set steps=1");
  wait_for(state, [&](const nlohmann::json& l) { return find(l, longer).value("status", "") == "running"; }, 60s, "a run");
  auto c1 = run(state, loom_cmd("cancel " + std::to_string(queued)));
  BOOST_TEST(c1.code == 0, c1.err);
  auto c2 = run(state, loom_cmd("cancel " + std::to_string(longer)));
  BOOST_TEST(c2.code == 0, c2.err);
  auto after = status_json(state);
  BOOST_TEST(find(after, queued)["status"] == "cancelled");
  BOOST_TEST(find(after, longer)["status"] == "cancelled");
  auto again = run(state, loom_cmd("cancel " + std::to_string(queued)));
  BOOST_TEST(again.code == 1);

  // SIGTERM: the running one is stopped and marked interrupted; the queued one stays queued.
  auto running = submit(state, "--set steps=200");
  auto waiting = submit(state, "--set steps=1");
  wait_for(state, [&](const nlohmann::json& l) { return find(l, running).value("status", "") == "running"; }, 60s, "a run");
  BOOST_TEST(loomd.term() == 0);
  BOOST_TEST(!fs::exists(state + "/endpoint"));
  loomd.start();
  auto resumed = wait_for(state, [&](const nlohmann::json& l) { return find(l, waiting).value("status", "") == "done"; }, 120s,
                          "the queued one to run after the restart");
  BOOST_TEST(find(resumed, running)["status"] == "interrupted");
  BOOST_TEST(find(resumed, running)["error"].get<std::string>().find("stopped (SIGTERM)") != std::string::npos,
             find(resumed, running).dump());
  BOOST_TEST(loomd.term() == 0);
}

// Many short-lived clients at once, as a script queueing a sweep makes them: every one gets its
// reply. (CAF's deserialization workers in the daemon's middleman once lost some of these replies;
// the client then waited out its 120 s timeout.)
BOOST_AUTO_TEST_CASE(every_concurrent_submission_is_answered) {
  temp_dir d;
  const std::string state = d / "state";
  daemon_process loomd(state);
  loomd.start();
  const auto busy = submit(state, "--set steps=100000");  // keeps the cores busy meanwhile, as in use
  const int n = 200;
  // In one shell, so that LOOM_STATE reaches every client of the pipeline.
  auto r = run(state, "sh -c \"seq " + std::to_string(n) + " | xargs -P 8 -I{} " +
                          loom_cmd("submit " + source_dir + "/examples/cpu-small.toml --set steps=1") + "\"");
  BOOST_TEST(r.code == 0, r.err.substr(0, 2000));
  std::set<std::string> ids;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) ids.insert(line);
  BOOST_TEST(ids.size() == static_cast<std::size_t>(n), r.out.size() << " bytes of ids; errors: " << r.err.substr(0, 2000));
  BOOST_TEST(status_json(state).size() == static_cast<std::size_t>(n + 1));
  BOOST_TEST(run(state, loom_cmd("cancel " + std::to_string(busy))).code == 0);
  BOOST_TEST(loomd.term() == 0);
}

BOOST_AUTO_TEST_SUITE_END()

namespace {

// A TCP connection to the daemon's port (STATE/endpoint) that speaks no protocol: the test writes bytes.
class raw_connection {
 public:
  explicit raw_connection(const std::string& state) {
    auto where = parse_endpoint(read_file(state + "/endpoint"));
    BOOST_TEST_REQUIRE(where.has_value());
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    BOOST_TEST_REQUIRE(fd_ >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(where->port);
    BOOST_TEST_REQUIRE(::inet_pton(AF_INET, where->host.c_str(), &a.sin_addr) == 1);
    BOOST_TEST_REQUIRE(::connect(fd_, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0, std::strerror(errno));
  }
  ~raw_connection() { ::close(fd_); }
  raw_connection(const raw_connection&) = delete;
  raw_connection& operator=(const raw_connection&) = delete;
  // Sends what it can; the daemon may close the connection on the way (that is the point).
  void send(const std::string& bytes) { [[maybe_unused]] auto n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL); }

 private:
  int fd_ = -1;
};

// A BASP header (CAF 0.17, caf/io/basp/header.hpp): operation, 2 padding bytes, flags, payload size
// (big-endian u32), then three u64 fields, 32 bytes in all.
std::string basp_header(std::uint8_t operation, std::uint32_t payload_bytes) {
  std::string h(32, '\0');
  h[0] = static_cast<char>(operation);
  const std::uint32_t be = htonl(payload_bytes);
  std::memcpy(h.data() + 4, &be, sizeof be);
  return h;
}
constexpr std::uint8_t client_handshake = 0x01, direct_message = 0x02;

long rss_mib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6)) / 1024;
  return -1;
}

bool daemon_alive(pid_t pid) {
  int st;
  return ::waitpid(pid, &st, WNOHANG) == 0;
}

// `loom status` answers (within its own 10 s connect limit) and the process is still there.
void expect_serving(const std::string& state, pid_t pid, const std::string& after) {
  BOOST_TEST(daemon_alive(pid), "loomd died after " << after);
  auto r = run(state, loom_cmd("status"));
  BOOST_TEST(r.code == 0, "after " << after << ": " << r.err);
}

}  // namespace

// Bytes that are not a client's: the daemon's port must keep serving real clients meanwhile and after.
BOOST_AUTO_TEST_SUITE(daemon_port)

// The gate follows the BASP framing however the socket cuts the stream: the same sizes come out of a
// stream of headers and payloads fed whole, byte by byte, or in uneven pieces.
BOOST_AUTO_TEST_CASE(the_framing_survives_any_split) {
  std::string stream;
  std::vector<std::uint32_t> sizes = {0, 5, 0, 1000, 31, 32, 33, 70000, 0};
  for (auto n : sizes) stream += basp_header(direct_message, n) + std::string(n, 'p');
  stream += basp_header(client_handshake, 12).substr(0, 20);  // a header cut short: not reported
  auto scan_in = [&](std::size_t piece) {
    basp_scanner scanner;
    std::vector<std::uint32_t> seen;
    for (std::size_t at = 0; at < stream.size(); at += piece) {
      const std::size_t n = std::min(piece + at % 7, stream.size() - at);  // uneven pieces
      BOOST_TEST(scanner.scan(stream.data() + at, n, [&](std::uint32_t s) { seen.push_back(s); return true; }));
      at += n - piece;
    }
    BOOST_TEST(scanner.header_have == 20u);
    BOOST_TEST(scanner.payload_left == 0u);
    return seen;
  };
  for (std::size_t piece : {stream.size(), std::size_t{1}, std::size_t{3}, std::size_t{32}, std::size_t{4096}})
    BOOST_TEST(scan_in(piece) == sizes, "pieces of " << piece);
  basp_scanner stop;  // a refusal stops the scan at that header
  int calls = 0;
  BOOST_TEST(!stop.scan(stream.data(), stream.size(), [&](std::uint32_t s) { ++calls; return s < 1000; }));
  BOOST_TEST(calls == 4);
}

// A stand-in for the middleman: echoes back whatever each connection sends, on 127.0.0.1.
class echo_server {
 public:
  echo_server() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    BOOST_TEST_REQUIRE(::bind(fd_, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0);
    BOOST_TEST_REQUIRE(::listen(fd_, 16) == 0);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    accepter_ = std::thread([this] {
      for (int c; (c = ::accept(fd_, nullptr, nullptr)) >= 0;)
        std::thread([c] {
          char buf[4096];
          for (ssize_t n; (n = ::recv(c, buf, sizeof buf, 0)) > 0;) ::send(c, buf, static_cast<std::size_t>(n), MSG_NOSIGNAL);
          ::close(c);
        }).detach();
    });
  }
  ~echo_server() {
    ::shutdown(fd_, SHUT_RDWR);
    accepter_.join();
    ::close(fd_);
  }
  std::uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::thread accepter_;
};

int connect_to(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval limit{10, 0};  // a hang guard for the reads below
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  BOOST_TEST_REQUIRE(::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0);
  return fd;
}

// Reads exactly n bytes, or what came before the peer closed.
std::string read_n(int fd, std::size_t n) {
  std::string got;
  char buf[4096];
  while (got.size() < n) {
    const ssize_t k = ::recv(fd, buf, std::min(sizeof buf, n - got.size()), 0);
    if (k <= 0) break;
    got.append(buf, static_cast<std::size_t>(k));
  }
  return got;
}

// The gate alone, in front of an echo server: messages cross it both ways intact, a connection past
// the cap is closed at once, and a slot frees up when a connection ends.
BOOST_AUTO_TEST_CASE(the_gate_relays_and_caps_connections) {
  echo_server backend;
  std::vector<std::string> lines;
  std::mutex lines_mutex;
  gate_settings gs;
  gs.port = 0;
  gs.backend_port = backend.port();
  gs.max_connections = 3;
  gs.log = [&](const std::string& l) {
    std::lock_guard<std::mutex> lock(lines_mutex);
    lines.push_back(l);
  };
  auto g = gate::open(gs);
  BOOST_TEST_REQUIRE(g.has_value(), (g ? "" : g.error().message));
  const std::uint16_t port = (*g)->port();
  BOOST_TEST(port != 0);

  const std::string message = basp_header(direct_message, 70000) + std::string(70000, 'm');  // several reads
  int first = connect_to(port);
  BOOST_TEST(::send(first, message.data(), message.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(message.size()));
  BOOST_TEST(read_n(first, message.size()) == message);
  const int second = connect_to(port), third = connect_to(port);
  const int fourth = connect_to(port);  // the kernel accepts it; the gate then closes it
  char byte;
  BOOST_TEST(::recv(fourth, &byte, 1, 0) == 0, "a fourth connection should be closed (not time out: errno " << errno << ")");
  ::close(first);
  std::this_thread::sleep_for(100ms);  // the gate sees the close
  const int fifth = connect_to(port);
  BOOST_TEST(::send(fifth, message.data(), message.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(message.size()));
  BOOST_TEST(read_n(fifth, message.size()) == message, "a freed slot should be usable again");
  for (int fd : {second, third, fourth, fifth}) ::close(fd);
  g->reset();  // stops the relay thread
  std::lock_guard<std::mutex> lock(lines_mutex);
  BOOST_TEST_REQUIRE(lines.size() == 1u);
  BOOST_TEST(lines[0].find("3 connections are open already") != std::string::npos, lines[0]);
}

BOOST_AUTO_TEST_CASE(malformed_requests_leave_it_serving) {
  temp_dir d;
  const std::string state = d / "state";
  daemon_process loomd(state);
  loomd.start();
  const pid_t pid = loomd.pid();
  const long rss_at_start = rss_mib(pid);

  std::mt19937 rng(7);
  auto random_bytes = [&](std::size_t n) {
    std::string b(n, '\0');
    for (auto& c : b) c = static_cast<char>(rng());
    return b;
  };
  for (int i = 0; i < 8; ++i) raw_connection(state).send(random_bytes(64u << 10));  // (the log keeps 20 lines a burst)
  expect_serving(state, pid, "garbage bytes");

  raw_connection(state).send(basp_header(client_handshake, 100).substr(0, 13));         // a truncated header
  raw_connection(state).send(basp_header(client_handshake, 1000) + random_bytes(100));  // a truncated message
  raw_connection(state).send(basp_header(0xee, 0));                                      // no such operation
  expect_serving(state, pid, "truncated messages");

  {  // Huge sizes, the connections held open: without a cap the daemon would allocate them first.
    raw_connection a(state), b(state);
    a.send(basp_header(client_handshake, 0xfffffff0u));
    b.send(basp_header(direct_message, 0x7fffffffu));
    std::vector<std::unique_ptr<raw_connection>> many;  // 40 x 32 MiB: each under the per-message cap
    for (int i = 0; i < 40; ++i) {
      many.push_back(std::make_unique<raw_connection>(state));
      many.back()->send(basp_header(client_handshake, 32u << 20));
    }
    std::this_thread::sleep_for(500ms);
    expect_serving(state, pid, "huge sizes");
    BOOST_TEST(rss_mib(pid) < rss_at_start + 768, "loomd holds " << rss_mib(pid) << " MiB while strangers announce huge messages");
  }
  {
    std::vector<std::unique_ptr<raw_connection>> idle;  // connections that never say a word
    for (int i = 0; i < 300; ++i) idle.push_back(std::make_unique<raw_connection>(state));
    expect_serving(state, pid, "300 silent connections");
  }
  expect_serving(state, pid, "all of it");
  const auto id = submit(state, "--set steps=1");  // and it still takes work
  BOOST_TEST(id > 0);
  {  // A large submission (a 3 MiB schedule) crosses the gate in many pieces and is accepted whole.
    std::string big = read_file(source_dir + "/schedules/1f1b.sched");
    const std::string line = "// " + std::string(1021, 'x') + "\n";
    for (int i = 0; i < 3072; ++i) big += line;
    write_file(d / "big.sched", big);
    write_file(d / "big.toml", std::regex_replace(read_file(source_dir + "/examples/cpu-small.toml"),
                                                  std::regex("file = \"[^\"]*\""), "file = \"big.sched\""));
    auto r = run(state, loom_cmd("submit " + (d / "big.toml") + " --set steps=1"));
    BOOST_TEST(r.code == 0, r.err);
  }
  BOOST_TEST(loomd.output().find("announced a message of 4294967280 bytes") != std::string::npos, loomd.output());
  BOOST_TEST(loomd.term() == 0);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(daemon_compare)

BOOST_AUTO_TEST_CASE(the_compare_page_is_self_contained) {
  compared_experiment a, b;
  a.info.id = 3;
  a.info.name = "one</script><script>alert(1)</script>";
  a.info.status = "done";
  a.report_json = R"({"steps":[{"wall_ms":10}],"measured":{"bubble_ratio":0.25,"makespan":9},"predicted":{"bubble_ratio":0.2,"makespan":8},"ops":{"attn_f":{"total_ms":3}},"memory":{"peak_activation_bytes_max":1048576}})";
  a.timeline_svg = "<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\"><style type=\"text/css\">.bg{fill:#fff}text{x:1}</style><rect class=\"bg\"/></svg>";
  b.info.id = 4;
  b.info.name = "two";
  b.info.status = "failed";
  b.info.error = "it broke";
  b.timeline_svg = "<svg onload=\"alert(1)\"></svg>";
  auto page = compare_page({a, b}, "t");
  BOOST_TEST(page.find("<script>alert(1)") == std::string::npos);  // data never becomes markup
  BOOST_TEST(page.find("#loom-tl-3 .bg{fill:#fff}") != std::string::npos);  // scoped stylesheet
  BOOST_TEST(page.find("onload") == std::string::npos);  // an unsafe SVG becomes an image
  BOOST_TEST(page.find("data:image/svg+xml;base64,") != std::string::npos);
  BOOST_TEST(page.find("http://") == page.find("http://www.w3.org/2000/svg"));  // no external resource
  BOOST_TEST(page.find("src=\"http") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(loom_compare_renders_in_chromium, *boost::unit_test::precondition(chromium_available)) {
  temp_dir d;
  const std::string state = d / "state";
  daemon_process loomd(state);
  loomd.start();
  std::vector<std::int64_t> ids;
  for (const char* sched : {"1f1b", "gpipe", "zb-h1"}) {
    auto r = run(state, loom_cmd("submit " + source_dir + "/examples/cpu-small.toml --set steps=1 --wait --set schedule.file=../schedules/" +
                             sched + ".sched"));
    BOOST_TEST_REQUIRE(r.code == 0, r.err);
    ids.push_back(std::stoll(r.out));
  }
  std::string args;
  for (auto id : ids) args += " " + std::to_string(id);
  const std::string page = d / "compare.html";
  auto c = run(state, loom_cmd("compare" + args + " -o " + page));
  BOOST_TEST_REQUIRE(c.code == 0, c.err);
  const std::string html = read_file(page);
  BOOST_TEST(html.find("<svg") != std::string::npos);
  const std::string profile = d / "chromium-profile";
  auto dom = run(state, "timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-background-networking "
                        "--disable-component-update --no-first-run --disable-dev-shm-usage --user-data-dir=" + profile +
                        " --dump-dom file://" + page);
  BOOST_TEST_REQUIRE(dom.code == 0, dom.err);
  BOOST_TEST(dom.out.find("id=\"loom-rendered\"") != std::string::npos, "the page's script did not finish:\n" << dom.err);
  BOOST_TEST(dom.out.find("<pre id=\"loom-errors\" class=\"loom-err\"></pre>") != std::string::npos,
             "script errors in the page: " << dom.out.substr(dom.out.find("loom-errors"), 400));
  for (auto id : ids) {
    BOOST_TEST(dom.out.find("id=\"loom-row-" + std::to_string(id) + "\"") != std::string::npos, "no summary row for " << id);
    BOOST_TEST(dom.out.find("id=\"loom-tl-" + std::to_string(id) + "\"") != std::string::npos, "no timeline for " << id);
  }
  BOOST_TEST(dom.out.find("attn") != std::string::npos);  // the per-component table was built
  BOOST_TEST(loomd.term() == 0);
}

BOOST_AUTO_TEST_SUITE_END()
