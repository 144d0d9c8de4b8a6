// The `loom` command on bad inputs, run as a subprocess: it must fail cleanly (exit status 1 or 2,
// never a signal, never 0), name the file (and line:col where there is one) and finish within a
// second. And on good inputs: the built-in schedules reproduce the shared reference orders byte for
// byte, and `loom sim --json` reproduces the shared simulation results. And the front end: `loom run`,
// `loom worker` and `loom devices` behave as they did when one binary held every command.
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

struct run_result {
  int status = -1;        // exit status, when the process exited
  int signal = 0;         // the signal that ended it, if one did
  bool timed_out = false;
  double seconds = 0;
  std::string out, err;
};

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A scratch folder for the inputs and the captured output, removed at the end.
struct scratch {
  fs::path dir;
  scratch() {
    dir = fs::temp_directory_path() / ("loom-cli-test-" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~scratch() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  fs::path write(const std::string& name, const std::string& text) const {
    fs::path p = dir / name;
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }
};

const scratch& temp() {
  static scratch s;
  return s;
}

// Runs the loom binary (or `bin`) with `args` from the source folder, with `env` ("NAME=VALUE")
// added to the environment, killing it after `limit` seconds.
run_result run_loom(const std::vector<std::string>& args, double limit = 10.0, const std::string& bin = LOOM_BINARY,
                    const std::vector<std::string>& env = {}) {
  run_result r;
  const fs::path out = temp().dir / "stdout.txt", err = temp().dir / "stderr.txt";
  auto start = std::chrono::steady_clock::now();
  pid_t pid = ::fork();
  BOOST_TEST_REQUIRE(pid >= 0, "fork failed");
  if (pid == 0) {
    int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int in = ::open("/dev/null", O_RDONLY);
    if (o < 0 || e < 0 || in < 0) ::_exit(127);
    ::dup2(in, 0);
    ::dup2(o, 1);
    ::dup2(e, 2);
    if (::chdir(LOOM_SOURCE_DIR) != 0) ::_exit(127);
    for (const auto& e : env) ::putenv(const_cast<char*>(e.c_str()));
    std::vector<char*> argv;
    std::string program = bin;
    argv.push_back(program.data());
    std::vector<std::string> copy = args;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(program.c_str(), argv.data());
    ::_exit(127);
  }
  int wstatus = 0;
  for (;;) {
    pid_t done = ::waitpid(pid, &wstatus, WNOHANG);
    if (done == pid) break;
    double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (elapsed > limit) {
      r.timed_out = true;
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &wstatus, 0);
      break;
    }
    ::usleep(2000);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (WIFEXITED(wstatus)) r.status = WEXITSTATUS(wstatus);
  if (WIFSIGNALED(wstatus)) r.signal = WTERMSIG(wstatus);
  r.out = read_file(out);
  r.err = read_file(err);
  return r;
}

std::string shown(const run_result& r) {
  std::ostringstream s;
  s << "status " << r.status << ", signal " << r.signal << (r.timed_out ? ", timed out" : "") << ", " << r.seconds
    << " s\nstderr: " << r.err.substr(0, 1500) << "\nstdout: " << r.out.substr(0, 300);
  return s.str();
}

// `loom check` on a bad input: a clean failure, naming the file (with line:col when `located`), and no
// hang: the 60 s limit catches a checker that loops or blows up, not a slow machine (speed is measured
// in bench/, not here).
void expect_clean_failure(const std::string& name, const std::vector<std::string>& args, const std::string& file,
                          bool located) {
  BOOST_TEST_CONTEXT(name) {
    run_result r = run_loom(args, 60.0);
    BOOST_TEST(!r.timed_out, shown(r));
    BOOST_TEST(r.signal == 0, "killed by signal " << r.signal << ": " << shown(r));
    BOOST_TEST((r.status == 1 || r.status == 2), shown(r));
    BOOST_TEST(r.err.find(file) != std::string::npos, "the error does not name " << file << ": " << shown(r));
    if (located) {
      const std::regex at(std::regex_replace(file, std::regex(R"([.^$|()\[\]{}*+?\\])"), R"(\$&)") + ":[0-9]+:[0-9]+: error: ");
      BOOST_TEST(std::regex_search(r.err, at), "no " << file << ":line:col: error: in " << shown(r));
    }
    BOOST_TEST(r.out.find(": ok:") == std::string::npos, shown(r));
  }
}

std::string repeat(const std::string& s, std::size_t n) {
  std::string out;
  out.reserve(s.size() * n);
  for (std::size_t i = 0; i < n; ++i) out += s;
  return out;
}

const char* const ok_schedule = "schedule s(ranks = 2, microbatches = 2) {\n  rank r { F 0; F 0; B 0; B 0 }\n}\n";

}  // namespace

BOOST_AUTO_TEST_SUITE(cli_bad_inputs)

BOOST_AUTO_TEST_CASE(version_and_help) {
  auto v = run_loom({"--version"});
  BOOST_TEST(v.status == 0, shown(v));
  BOOST_TEST(v.out.find("loom ") == 0u, shown(v));
  auto h = run_loom({"--help"});
  BOOST_TEST(h.status == 0, shown(h));
  for (const char* cmd : {"check", "compile", "sim", "plot", "convert"})
    BOOST_TEST(h.out.find(cmd) != std::string::npos, cmd << " missing from --help: " << shown(h));
  auto none = run_loom({});
  BOOST_TEST(none.status == 0, shown(none));
  auto usage = run_loom({"check"});
  BOOST_TEST(usage.status == 2, shown(usage));
  auto unknown = run_loom({"frobnicate"});
  BOOST_TEST(unknown.status == 2, shown(unknown));
}

BOOST_AUTO_TEST_CASE(a_good_file_passes) {
  auto f = temp().write("good.sched", ok_schedule);
  auto r = run_loom({"check", f.string()});
  BOOST_TEST(r.status == 0, shown(r));
  BOOST_TEST(r.out.find("ok: schedule s: 2 ranks") != std::string::npos, shown(r));
}

BOOST_AUTO_TEST_CASE(bytes_that_are_not_a_schedule) {
  const auto& t = temp();
  std::string garbage;
  std::uint32_t x = 12345;
  for (int i = 0; i < 65536; ++i) {
    x = x * 1664525u + 1013904223u;
    garbage += static_cast<char>(x >> 24);
  }
  struct input {
    const char* name;
    std::string text;
    bool located;
  };
  const std::vector<input> inputs = {
      {"empty.sched", "", true},
      {"garbage.sched", garbage, true},
      {"nul.sched", std::string("schedule s(ranks = 1, microbatches = 1) {\0\0\0 rank r { } }\n", 57), true},
      {"utf8.sched", "schedule s\xc3\x28(ranks = 1) { rank r { \xff\xfe } }\n", true},
      {"long-line.sched", std::string(10u << 20, 'x'), false},  // over the file size limit
      {"brackets.sched", "schedule s(ranks = 1, microbatches = " + std::string(200000, '(') + "1) { rank r { } }\n", true},
      {"braces.sched", "schedule s(ranks = 1, microbatches = 1) {\n  rank r " + std::string(200000, '{') + "\n", true},
      {"string.sched", "import \"lib.sched\nschedule s(ranks = 1, microbatches = 1) { rank r { } }\n", true},
      {"comment.sched", "schedule s(ranks = 1, microbatches = 1) { rank r { F 0; B 0 } }\n/* never closed\n", true},
      {"bigint.sched", "schedule s(ranks = 1, microbatches = 1) {\n  rank r { F 0.9223372036854775808 }\n}\n", true},
      {"loop.sched", "schedule s(ranks = 1, microbatches = 1) {\n  rank r {\n    F 0; B 0\n    repeat 1000000000000 { W }\n  }\n}\n", true},
      {"nested-loops.sched",
       "schedule s(ranks = 1, microbatches = 1) {\n  rank r {\n    F 0; B 0\n    repeat 1000000 { repeat 1000000 { } }\n  }\n}\n", true},
      {"syntax.sched", "schedule s(ranks = 1, microbatches = 1) {\n  rank r { F 0 & }\n}\n", true},
  };
  for (const auto& in : inputs) {
    auto f = t.write(in.name, in.text);
    expect_clean_failure(in.name, {"check", f.string()}, f.string(), in.located);
  }
}

BOOST_AUTO_TEST_CASE(absurd_parameters) {
  auto f = temp().write("params.sched", "schedule s(ranks, microbatches) {\n  rank r { F 0; B 0 }\n}\n");
  expect_clean_failure("ranks=1000000", {"check", f.string(), "--set", "ranks=1000000", "--set", "microbatches=4"}, f.string(), true);
  expect_clean_failure("ranks=-1", {"check", f.string(), "--set", "ranks=-1", "--set", "microbatches=4"}, f.string(), true);
  expect_clean_failure("microbatches=1e11", {"check", f.string(), "--set", "ranks=4", "--set", "microbatches=100000000000"},
                       f.string(), true);
  expect_clean_failure("microbatches=2^20", {"check", f.string(), "--set", "ranks=4", "--set", "microbatches=1048576"},
                       f.string(), true);
  expect_clean_failure("ranks=4096 microbatches=2^20",
                       {"check", f.string(), "--set", "ranks=4096", "--set", "microbatches=1048576"}, f.string(), true);
  // Parameters the schedule does not have, or values that are not integers, name the file too.
  expect_clean_failure("unknown parameter", {"check", f.string(), "--set", "rank=4"}, f.string(), false);
  expect_clean_failure("not a number", {"check", f.string(), "--set", "ranks=four", "--set", "microbatches=4"}, f.string(), false);
}

BOOST_AUTO_TEST_CASE(files_that_cannot_be_read) {
  const auto& t = temp();
  fs::create_directories(t.dir / "a-directory.sched");
  const std::string dir = (t.dir / "a-directory.sched").string();
  expect_clean_failure("directory", {"check", dir}, dir, false);
  const std::string missing = (t.dir / "missing.sched").string();
  expect_clean_failure("missing", {"check", missing}, missing, false);
  auto imp = t.write("imports-missing.sched",
                     "import \"nowhere/lib.sched\"\nschedule s(ranks = 1, microbatches = 1) { rank r { F 0; B 0 } }\n");
  expect_clean_failure("missing import", {"check", imp.string()}, imp.string(), true);
  auto a = t.write("cycle-a.sched", "import \"cycle-b.sched\"\nschedule s(ranks = 1, microbatches = 1) { rank r { F 0; B 0 } }\n");
  t.write("cycle-b.sched", "import \"cycle-a.sched\"\n");
  expect_clean_failure("import cycle", {"check", a.string()}, (t.dir / "cycle-b.sched").string(), true);
  auto txt = t.write("actions.txt", "rank 0: F0.0 X\n");
  expect_clean_failure("action text", {"check", txt.string()}, txt.string(), true);
  auto csv = t.write("actions.csv", "0F0,0B0\n0Q1\n");
  expect_clean_failure("csv", {"check", csv.string()}, csv.string(), true);
}

// Inputs that once made the checker crash or take minutes: each must fail fast and cleanly too.
BOOST_AUTO_TEST_CASE(pathological_but_small_files) {
  const auto& t = temp();
  struct input {
    const char* name;
    std::string text;
  };
  const std::vector<input> inputs = {
      // A million-term sum: the syntax tree is a million deep (recursion in the name check, the
      // evaluator and the tree's destructor).
      {"long-sum.sched",
       "schedule s(ranks = 1, microbatches = 1) {\n  rank r {\n    let x = " + repeat("1+", 1000000) +
           "oops\n    F 0; B 0\n  }\n}\n"},
      // 300k parameters: the duplicate check must not be quadratic.
      {"many-params.sched", "schedule s(" + [] {
         std::string p;
         for (int i = 0; i < 300000; ++i) p += "p" + std::to_string(i) + ", ";
         return p;
       }() + "ranks = 1) {\n}\n"},
      // 150k programs, 100k pipelines: duplicate checks again.
      {"many-programs.sched", [] {
         std::string p;
         for (int i = 0; i < 150000; ++i) p += "program p" + std::to_string(i) + "() { }\n";
         return p + "schedule s(ranks = 1, microbatches = 1) {\n  rank r { F 0.1 }\n}\n";
       }()},
      {"many-pipelines.sched", [] {
         std::string p = "schedule s(ranks = 1, microbatches = 1) {\n";
         for (int i = 0; i < 100000; ++i) p += "  pipeline p" + std::to_string(i) + " stages = 1\n";
         return p + "  rank r { }\n}\n";
       }()},
      // 150k names in scope: looking one up must not scan them all.
      {"many-lets.sched", [] {
         std::string p = "schedule s(ranks = 1, microbatches = 1) {\n  rank r {\n    let first = 1\n";
         for (int i = 0; i < 150000; ++i) p += "    let a" + std::to_string(i) + " = first\n";
         return p + "    F 0.1\n  }\n}\n";
       }()},
      // 20k names in scope and two million steps that look up the oldest one.
      {"lookups.sched", [] {
         std::string p = "schedule s(ranks = 1, microbatches = 1) {\n  rank r {\n    let first = 1\n";
         for (int i = 0; i < 20000; ++i) p += "    let a" + std::to_string(i) + " = " + std::to_string(i) + "\n";
         return p + "    repeat 1000 { repeat 1000 { let q = first } }\n    require 0, \"stop here\"\n  }\n}\n";
       }()},
      // 4096 ranks x 64 chunks x 2^20 microbatches: per-microbatch bookkeeping must not be allocated
      // for every (rank, chunk) up front.
      {"huge-placement.sched",
       "schedule s(ranks = 4096, microbatches = 1048576) {\n  pipeline main stages = 262144\n"
       "  place rank r { for c in 0..64 { chunk c = main[c * 4096 + r] } }\n  rank r { }\n}\n"},
  };
  for (const auto& in : inputs) {
    auto f = t.write(in.name, in.text);
    expect_clean_failure(in.name, {"check", f.string()}, f.string(), true);
  }
}

BOOST_AUTO_TEST_CASE(compile_reproduces_the_reference_cases) {
  const fs::path cases = fs::path(LOOM_SHARED_CASES) / "schedules";
  int seen = 0;
  for (const auto& entry : fs::directory_iterator(cases)) {
    std::smatch m;
    const std::string stem = entry.path().stem().string();
    BOOST_TEST_REQUIRE(std::regex_match(stem, m, std::regex("^(.+)-r([0-9]+)-m([0-9]+)$")), stem);
    auto r = run_loom({"compile", "schedules/" + m[1].str() + ".sched", "--set", "ranks=" + m[2].str(), "--set",
                       "microbatches=" + m[3].str(), "--emit", "actions"});
    BOOST_TEST_CONTEXT(stem) {
      BOOST_TEST(r.status == 0, shown(r));
      BOOST_TEST(r.out == read_file(entry.path()));
      BOOST_TEST(r.err.empty(), r.err);
    }
    ++seen;
  }
  BOOST_TEST(seen >= 6);
}

BOOST_AUTO_TEST_CASE(sim_reproduces_the_public_results) {
  auto cases = nlohmann::json::parse(read_file(fs::path(LOOM_SHARED_CASES) / "sim-public.json"));
  BOOST_TEST_REQUIRE(cases.size() >= 5u);
  auto number = [](double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    return std::string(buf);
  };
  for (const auto& c : cases) {
    const std::string name = c["schedule"].get<std::string>();
    const auto& cost = c["cost"];
    const std::string costs = "F=" + number(cost["F"].get<double>()) + ",B=" + number(cost["B"].get<double>()) +
                              ",W=" + number(cost["W"].get<double>()) + ",FB=" + number(cost["FB"].get<double>());
    BOOST_TEST_CONTEXT(name << " ranks=" << c["ranks"] << " microbatches=" << c["microbatches"] << " " << costs) {
      auto r = run_loom({"sim", "schedules/" + name + ".sched", "--set", "ranks=" + std::to_string(c["ranks"].get<int>()),
                         "--set", "microbatches=" + std::to_string(c["microbatches"].get<int>()), "--cost", costs, "--json"});
      BOOST_TEST_REQUIRE(r.status == 0, shown(r));
      auto j = nlohmann::json::parse(r.out);
      BOOST_TEST(j["makespan"].get<double>() == c["makespan"].get<double>());
      BOOST_TEST(j["idle"].get<std::vector<double>>() == c["idle"].get<std::vector<double>>(), boost::test_tools::per_element());
      BOOST_TEST(j["ranks"].get<int>() == c["ranks"].get<int>());
      BOOST_TEST(j["level"].get<std::string>() == "action");
    }
  }
}

BOOST_AUTO_TEST_SUITE_END()

// `loom` is a front end that becomes loom-engine for run, worker and devices (apps/loom/engine.hpp):
// users still type `loom run`, and see the engine's exit status and output as if it were one program.
BOOST_AUTO_TEST_SUITE(cli_front_end)

BOOST_AUTO_TEST_CASE(help_lists_every_command) {
  auto h = run_loom({"--help"});
  BOOST_TEST(h.status == 0, shown(h));
  for (const char* cmd : {"run", "worker", "check", "compile", "sim", "plot", "convert", "devices", "rebalance", "submit",
                          "status", "logs", "cancel", "results", "list", "compare", "hosts"})
    BOOST_TEST(std::regex_search(h.out, std::regex(std::string("\\n  ") + cmd + " ")), cmd << " missing from --help: " << shown(h));
  auto run_help = run_loom({"run", "--help"});
  BOOST_TEST(run_help.status == 0, shown(run_help));
  BOOST_TEST(run_help.out.find("--procs") != std::string::npos, shown(run_help));
}

BOOST_AUTO_TEST_CASE(engine_commands_pass_exit_status_and_output_through) {
  auto usage = run_loom({"run"});
  BOOST_TEST(usage.status == 2, shown(usage));
  BOOST_TEST(usage.err.find("EXPERIMENT is required") != std::string::npos, shown(usage));
  auto missing = run_loom({"run", "no-such-experiment.toml"});
  BOOST_TEST(missing.status == 1, shown(missing));
  BOOST_TEST(missing.err.find("no-such-experiment.toml") != std::string::npos, shown(missing));
  auto worker = run_loom({"worker"});
  BOOST_TEST(worker.status == 2, shown(worker));
  BOOST_TEST(worker.err.find("--rendezvous is required") != std::string::npos, shown(worker));
  auto devices = run_loom({"devices"});
  BOOST_TEST(devices.status == 0, shown(devices));
  BOOST_TEST((devices.out.rfind("gpu ", 0) == 0 || devices.out.rfind("no GPU: ", 0) == 0), shown(devices));
}

BOOST_AUTO_TEST_CASE(loom_run_runs_an_experiment) {
  const fs::path out = temp().dir / "run-out";
  auto r = run_loom({"run", "examples/cpu-small.toml", "--set", "steps=1", "--out", out.string()}, 120.0);
  BOOST_TEST_REQUIRE(r.status == 0, shown(r));
  BOOST_TEST(r.out.find("report: ") != std::string::npos, shown(r));
  BOOST_TEST(fs::exists(out / "report.json"));
}

BOOST_AUTO_TEST_CASE(a_missing_engine_is_named) {
  // A copy of loom alone in a folder: the schedule tools work, run says what is missing.
  const fs::path lonely = temp().dir / "lonely";
  fs::create_directories(lonely);
  fs::copy_file(LOOM_BINARY, lonely / "loom", fs::copy_options::overwrite_existing);
  auto check = run_loom({"check", "schedules/dualpipe.sched", "--set", "ranks=4", "--set", "microbatches=8"}, 10.0,
                        (lonely / "loom").string());
  BOOST_TEST(check.status == 0, shown(check));
  auto r = run_loom({"run", "examples/cpu-small.toml"}, 10.0, (lonely / "loom").string());
  BOOST_TEST(r.status == 1, shown(r));
  BOOST_TEST(r.err.find((lonely / "loom-engine").string() + " does not exist") != std::string::npos, shown(r));
  fs::remove_all(lonely);
}

BOOST_AUTO_TEST_CASE(the_front_end_loads_none_of_the_runtime_libraries) {
  // What makes `loom status` quick: the dynamic loader lists what the front end loads.
  auto r = run_loom({}, 10.0, LOOM_BINARY, {"LD_TRACE_LOADED_OBJECTS=1"});
  BOOST_TEST_REQUIRE(r.status == 0, shown(r));
  BOOST_TEST(r.out.find("libcaf_core") != std::string::npos, shown(r));
  for (const char* lib : {"libucp", "libucs", "libopenblas", "libcudart", "libcublas", "libnccl"})
    BOOST_TEST(r.out.find(lib) == std::string::npos, lib << " is loaded by the front end: " << shown(r));
}

BOOST_AUTO_TEST_SUITE_END()
