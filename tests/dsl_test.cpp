// The schedule language end to end: every feature compiles to the expected canonical actions, errors
// are located and reported together, limits stop pathological files fast, validation rejects broken
// schedules with the right message, and property tests over random valid schedules tie validation,
// the simulator and the text formats together.
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include <unistd.h>

#include "dsl/compile.hpp"
#include "dsl/load.hpp"
#include "runtime/schedule/action_text.hpp"
#include "runtime/schedule/limits.hpp"
#include "runtime/schedule/pytorch_csv.hpp"
#include "runtime/schedule/recipe.hpp"
#include "runtime/schedule/validate.hpp"
#include "runtime/sim/action_sim.hpp"

namespace fs = std::filesystem;
using namespace loom;
namespace limits = loom::schedule::limits;

namespace {

using files = std::map<std::string, std::string>;
using params = std::map<std::string, std::string>;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// What one compile produced: the schedule, or the error; the sources stay alive for later passes.
struct compiled {
  std::unique_ptr<source_set> src = std::make_unique<source_set>();
  std::optional<schedule::schedule> sched;
  loom::error err;
  double seconds = 0;

  bool ok() const { return sched.has_value(); }
  const std::string& message() const { return err.message; }
  // The canonical action text, or the error for a readable test failure.
  std::string actions() const { return sched ? schedule::format_actions(*sched) : "<error: " + err.message + ">"; }
  // "" when the schedule validates, else the rendered diagnostics.
  std::string validation() const {
    if (!sched) return "<not compiled: " + err.message + ">";
    auto ok = schedule::validate(*sched, *src);
    return ok ? "" : ok.error().message;
  }
};

// A reader over in-memory files; paths are normalised the way the import machinery joins them.
dsl::file_reader memory_reader(const files& fs_files) {
  return [&fs_files](source_set& src, const std::string& path) -> expected<std::uint32_t> {
    const std::string key = fs::path(path).lexically_normal().string();
    auto it = fs_files.find(key);
    if (it == fs_files.end()) return unexpected(errc::io_error, path + ": cannot open: no such file");
    return src.add(path, it->second);
  };
}

compiled compile_files(const files& fs_files, const std::string& main, const params& set = {},
                       const std::string& schedule_name = "") {
  compiled c;
  dsl::compile_request req;
  req.path = main;
  req.set = set;
  req.schedule_name = schedule_name;
  auto reader = memory_reader(fs_files);
  auto start = std::chrono::steady_clock::now();
  auto s = dsl::compile(*c.src, req, reader);
  c.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (s) c.sched = std::move(*s);
  else c.err = s.error();
  return c;
}

compiled compile_text(const std::string& text, const params& set = {}, const std::string& schedule_name = "") {
  return compile_files({{"t.sched", text}}, "t.sched", set, schedule_name);
}

// A one-rank schedule whose program is `body`, with enough microbatches to index freely.
std::string one_rank(const std::string& body, int microbatches = 100) {
  return "schedule s(ranks = 1, microbatches = " + std::to_string(microbatches) + ") {\n  rank r {\n" + body +
         "\n  }\n}\n";
}

// Parses action text from memory; the sources are kept for validation messages.
struct parsed_text {
  std::unique_ptr<source_set> src = std::make_unique<source_set>();
  expected<schedule::schedule> sched = unexpected(errc::internal, "not parsed");
  std::string validation() const {
    if (!sched) return "<not parsed: " + sched.error().message + ">";
    auto ok = schedule::validate(*sched, *src);
    return ok ? "" : ok.error().message;
  }
};

parsed_text parse_text(const std::string& text, const std::string& path = "a.txt") {
  parsed_text p;
  auto id = p.src->add(path, text);
  p.sched = schedule::parse_actions(*p.src, id);
  return p;
}

// Every "error:" and "note:" line of a rendered message is located (file:line:col, line > 0) and is
// followed by the source line and a caret.
void check_located(const std::string& message, const std::string& file) {
  std::istringstream in(message);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  const std::regex head("^(.+):([0-9]+):([0-9]+): (error|note): .+$");
  int diagnostics = 0;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const std::string& line = lines[i];
    if (!contains(line, ": error: ") && !contains(line, ": note: ")) continue;
    ++diagnostics;
    std::smatch m;
    BOOST_TEST_REQUIRE(std::regex_match(line, m, head), "not located: '" << line << "' in\n" << message);
    BOOST_TEST(m[1].str() == file);
    BOOST_TEST(std::stoi(m[2].str()) > 0);
    BOOST_TEST(std::stoi(m[3].str()) > 0);
    BOOST_TEST_REQUIRE(i + 2 < lines.size(), "no source line after: " << line);
    BOOST_TEST(std::regex_match(lines[i + 1], std::regex("^ " + m[2].str() + " \\| .*$")), lines[i + 1]);
    BOOST_TEST(std::regex_match(lines[i + 2], std::regex("^ +\\| [ \t]*(\\.\\.\\.)?\\^$|^ +\\| [ \t]*\\^$")),
               "caret line: '" << lines[i + 2] << "'");
  }
  BOOST_TEST(diagnostics > 0, "no diagnostic in: " << message);
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

fs::path source_dir() { return fs::path(LOOM_SOURCE_DIR); }
fs::path cases_dir() { return fs::path(LOOM_SHARED_CASES); }

}  // namespace

// ================================================================================================
BOOST_AUTO_TEST_SUITE(dsl_language)

BOOST_AUTO_TEST_CASE(tour_example_compiles_to_1f1b) {
  const std::string text = R"(
schedule onef1b(ranks, microbatches) {
  require microbatches >= 1
  pipeline main stages = ranks
  place rank r { chunk 0 = main[r] }
  rank r {
    let warm = min(ranks - r - 1, microbatches)
    repeat warm { F 0 }
    repeat microbatches - warm { F 0; B 0 }
    repeat warm { B 0 }
  }
}
)";
  auto c = compile_text(text, {{"ranks", "4"}, {"microbatches", "8"}});
  BOOST_TEST_REQUIRE(c.ok(), c.message());
  BOOST_TEST(c.actions() == read_file(cases_dir() / "schedules" / "1f1b-r4-m8.txt"));
  BOOST_TEST(c.validation() == "");
  BOOST_TEST(c.sched->name == "onef1b");
}

BOOST_AUTO_TEST_CASE(parameters_with_defaults_and_set_overrides) {
  const std::string text = R"(
schedule s(ranks = 2, microbatches = 2, extra = ranks + 1) {
  rank r {
    repeat microbatches { F 0 }
    repeat microbatches { B 0 }
  }
}
)";
  auto d = compile_text(text);
  BOOST_TEST_REQUIRE(d.ok(), d.message());
  BOOST_TEST(d.actions() == "rank 0: F0.0 F0.1 B0.0 B0.1\nrank 1: F0.0 F0.1 B0.0 B0.1\n");
  BOOST_TEST(d.sched->params.at("extra") == 3);

  // An override wins; later defaults see it.
  auto o = compile_text(text, {{"ranks", "3"}, {"microbatches", "1"}});
  BOOST_TEST_REQUIRE(o.ok(), o.message());
  BOOST_TEST(o.actions() == "rank 0: F0.0 B0.0\nrank 1: F0.0 B0.0\nrank 2: F0.0 B0.0\n");
  BOOST_TEST(o.sched->params.at("extra") == 4);
  BOOST_TEST(o.validation() == "");

  auto e = compile_text(text, {{"extra", "-5"}});
  BOOST_TEST_REQUIRE(e.ok(), e.message());
  BOOST_TEST(e.sched->params.at("extra") == -5);

  // No default and no --set.
  auto missing = compile_text("schedule s(ranks, microbatches) { rank r { F 0; B 0 } }\n", {{"ranks", "2"}});
  BOOST_TEST_REQUIRE(!missing.ok());
  BOOST_TEST(contains(missing.message(), "t.sched:1:19: error: parameter 'microbatches' has no default: give it with --set microbatches=N"),
             missing.message());

  // A value that is not an integer.
  auto bad = compile_text(text, {{"ranks", "two"}});
  BOOST_TEST_REQUIRE(!bad.ok());
  BOOST_TEST(bad.err.code == errc::invalid_argument);
  BOOST_TEST(contains(bad.message(), "--set ranks=two: the value must be an integer"), bad.message());

  // `stages` and `microbatches` double as parameter names.
  auto kw = compile_text("schedule s(ranks = 1, microbatches = 1, stages = 1) { rank r { F 0; B 0 } }\n");
  BOOST_TEST(kw.ok(), kw.message());
}

BOOST_AUTO_TEST_CASE(require_shows_the_users_message_at_the_require) {
  const std::string text =
      "schedule s(ranks, microbatches) {\n"
      "  require microbatches >= ranks, \"need a microbatch per rank\"\n"
      "  rank r { repeat microbatches { F 0 } repeat microbatches { B 0 } }\n"
      "}\n";
  auto ok = compile_text(text, {{"ranks", "2"}, {"microbatches", "2"}});
  BOOST_TEST(ok.ok(), ok.message());
  auto c = compile_text(text, {{"ranks", "4"}, {"microbatches", "2"}});
  BOOST_TEST_REQUIRE(!c.ok());
  BOOST_TEST(c.err.code == errc::invalid_schedule);
  BOOST_TEST(contains(c.message(), "t.sched:2:3: error: need a microbatch per rank (with ranks=4, microbatches=2)"),
             c.message());
  BOOST_TEST(contains(c.message(), "  require microbatches >= ranks"), c.message());
  check_located(c.message(), "t.sched");

  // The colon form, no message, and a require inside a rank program (which names the rank).
  auto colon = compile_text("schedule s(ranks = 1, microbatches = 1) {\n  require 0 : \"never\"\n  rank r { F 0; B 0 }\n}\n");
  BOOST_TEST(contains(colon.message(), "t.sched:2:3: error: never"), colon.message());
  auto bare = compile_text("schedule s(ranks = 1, microbatches = 1) {\n  require 1 == 2\n  rank r { F 0; B 0 }\n}\n");
  BOOST_TEST(contains(bare.message(), "t.sched:2:3: error: requirement not met"), bare.message());
  auto in_rank = compile_text(
      "schedule s(ranks = 3, microbatches = 1) {\n  rank r {\n    require r != 1, \"odd rank\"\n    F 0; B 0\n  }\n}\n");
  BOOST_TEST(contains(in_rank.message(), "t.sched:3:5: error: odd rank on rank 1"), in_rank.message());
}

BOOST_AUTO_TEST_CASE(pipelines_and_place_with_loops) {
  // DualPipeV's V, placed with a loop and a condition.
  const std::string text = R"(
schedule v(ranks = 2, microbatches = 2) {
  pipeline main stages = 2 * ranks
  place rank r {
    for c in 0..2 {
      if c == 0 { chunk c = main[r] } else { chunk c = main[2 * ranks - 1 - r] }
    }
  }
  rank r {
    repeat microbatches { F 0 }
    repeat microbatches { F 1 }
    repeat microbatches { B 1 }
    repeat microbatches { B 0 }
  }
}
)";
  auto c = compile_text(text);
  BOOST_TEST_REQUIRE(c.ok(), c.message());
  const auto& s = *c.sched;
  BOOST_TEST_REQUIRE(s.pipelines.size() == 1u);
  BOOST_TEST(s.pipelines[0].name == "main");
  BOOST_TEST(s.pipelines[0].stages == 4);
  BOOST_TEST(s.pipelines[0].microbatches == 2);
  BOOST_TEST((s.placement[0] == std::vector<schedule::stage_ref>{{0, 0}, {0, 3}}));
  BOOST_TEST((s.placement[1] == std::vector<schedule::stage_ref>{{0, 1}, {0, 2}}));
  BOOST_TEST(c.validation() == "");

  // Two pipelines with their own microbatch counts; a pipeline without a count takes the schedule's.
  auto two = compile_text(R"(
schedule d(ranks = 2, microbatches = 3) {
  pipeline a stages = ranks microbatches = 1
  pipeline b stages = ranks
  place rank r { chunk 0 = a[r]; chunk 1 = b[ranks - 1 - r] }
  rank r { F 0; F 1; F 1; F 1 }
}
)");
  BOOST_TEST_REQUIRE(two.ok(), two.message());
  BOOST_TEST(two.sched->pipelines[0].microbatches == 1);
  BOOST_TEST(two.sched->pipelines[1].microbatches == 3);
  BOOST_TEST(two.sched->total_microbatches() == 4);
  BOOST_TEST((two.sched->placement[0] == std::vector<schedule::stage_ref>{{0, 0}, {1, 1}}));
  BOOST_TEST(two.actions() == "rank 0: F0.0 F1.0 F1.1 F1.2\nrank 1: F0.0 F1.0 F1.1 F1.2\n");

  // Without a pipeline: one pipeline "main" with a stage per rank.
  auto plain = compile_text("schedule p(ranks = 3, microbatches = 1) { rank r { F 0; B 0 } }\n");
  BOOST_TEST_REQUIRE(plain.ok(), plain.message());
  BOOST_TEST(plain.sched->pipelines[0].name == "main");
  BOOST_TEST(plain.sched->pipelines[0].stages == 3);
  BOOST_TEST((plain.sched->placement[2] == std::vector<schedule::stage_ref>{{0, 2}}));

  // Placement errors: out of order chunks, an unknown pipeline, a stage out of range, an empty rank.
  auto order = compile_text(
      "schedule s(ranks = 1, microbatches = 1) {\n  pipeline m stages = 2\n  place rank r { chunk 1 = m[0] }\n  rank r { F 0 }\n}\n");
  BOOST_TEST(contains(order.message(), "t.sched:3:18: error: chunks are numbered in order from 0: rank 0 expects chunk 0 next, not chunk 1"),
             order.message());
  auto unknown = compile_text(
      "schedule s(ranks = 1, microbatches = 1) {\n  pipeline m stages = 1\n  place rank r { chunk 0 = q[0] }\n  rank r { F 0 }\n}\n");
  BOOST_TEST(contains(unknown.message(), "error: unknown pipeline 'q'"), unknown.message());
  auto range = compile_text(
      "schedule s(ranks = 1, microbatches = 1) {\n  pipeline m stages = 1\n  place rank r { chunk 0 = m[r + 1] }\n  rank r { F 0 }\n}\n");
  BOOST_TEST(contains(range.message(), "t.sched:3:32: error: the stage of pipeline m is 1; it must be between 0 and 0"),
             range.message());
  auto empty = compile_text(
      "schedule s(ranks = 2, microbatches = 1) {\n  pipeline m stages = 1\n  place rank r { if r == 0 { chunk 0 = m[0] } }\n  rank r { }\n}\n");
  BOOST_TEST(contains(empty.message(), "t.sched:3:3: error: the place block gives rank 1 no chunk"), empty.message());
  auto no_place = compile_text("schedule s(ranks = 2, microbatches = 1) {\n  pipeline m stages = 4\n  rank r { }\n}\n");
  BOOST_TEST(contains(no_place.message(), "without a 'place' block a schedule has one pipeline with one stage per rank"),
             no_place.message());
  auto action_in_place = compile_text(
      "schedule s(ranks = 1, microbatches = 1) {\n  place rank r { F 0 }\n  rank r { }\n}\n");
  BOOST_TEST(contains(action_in_place.message(), "t.sched:2:18: error: actions belong in the 'rank' program, not in 'place'"),
             action_in_place.message());
}

BOOST_AUTO_TEST_CASE(let_if_else_for_and_repeat) {
  auto c = compile_text(R"(
schedule s(ranks = 4, microbatches = 100) {
  let base = 10
  rank r {
    let x = base + r
    if r == 0 { F 0.x }
    else if r == 1 { F 0.(x + 1) }
    else if r == 2 { F 0.(x + 2) }
    else { F 0.(x + 3) }
    for i in 2..5 { F 0.i }
    for i in 5..2 { F 0.99 }
    repeat 0 { F 0.98 }
    repeat 2 { let y = 50; F 0.y }
    { let x = 60; F 0.x }
    F 0.x
  }
}
)");
  BOOST_TEST_REQUIRE(c.ok(), c.message());
  BOOST_TEST(c.actions() ==
             "rank 0: F0.10 F0.2 F0.3 F0.4 F0.50 F0.50 F0.60 F0.10\n"
             "rank 1: F0.12 F0.2 F0.3 F0.4 F0.50 F0.50 F0.60 F0.11\n"
             "rank 2: F0.14 F0.2 F0.3 F0.4 F0.50 F0.50 F0.60 F0.12\n"
             "rank 3: F0.16 F0.2 F0.3 F0.4 F0.50 F0.50 F0.60 F0.13\n");

  auto negative = compile_text(one_rank("repeat 1 - 3 { F 0 }"));
  BOOST_TEST(contains(negative.message(), "t.sched:3:10: error: repeat count is negative (-2)"), negative.message());
  // A name declared inside a block is gone after it.
  auto scoped = compile_text(one_rank("{ let inner = 1 }\nF 0.inner"));
  BOOST_TEST(contains(scoped.message(), "t.sched:4:5: error: unknown name 'inner'"), scoped.message());
}

BOOST_AUTO_TEST_CASE(integer_arithmetic_floor_division_and_modulo) {
  // Each F 0.(50 + e) shows e; explicit indices may repeat (the evaluator leaves that to validation).
  auto c = compile_text(one_rank(R"(
    F 0.(50 + 7 / 2)    F 0.(50 + -7 / 2)   F 0.(50 + 7 / -2)   F 0.(50 + -7 / -2)
    F 0.(50 + 7 % 3)    F 0.(50 + -7 % 3)   F 0.(50 + 7 % -3)   F 0.(50 + -7 % -3)
    F 0.(2 + 3 * 4)     F 0.((2 + 3) * 4)   F 0.(10 - 4 - 3)    F 0.(2 * 3 % 4)
    F 0.(1 < 2 == 1)    F 0.(1 || 0 && 0)   F 0.(!0 + !5)       F 0.(- -3)
    F 0.min(3, 1, 2)    F 0.max(3, 1, 2)    F 0.abs(-5)         F 0.(true + true + false)
    F 0.(0 && 1 / 0)    F 0.(1 || 1 % 0)    F 0.(3 >= 3) F 0.(3 > 3) F 0.(2 <= 1) F 0.(2 != 1)
    F 0.(min(7) + max(-1, 0))
  )"));
  BOOST_TEST_REQUIRE(c.ok(), c.message());
  BOOST_TEST(c.actions() ==
             "rank 0: F0.53 F0.46 F0.46 F0.53 F0.51 F0.52 F0.48 F0.49 F0.14 F0.20 F0.3 F0.2 F0.1 F0.1 F0.1 F0.3 "
             "F0.1 F0.3 F0.5 F0.2 F0.0 F0.1 F0.1 F0.0 F0.0 F0.1 F0.7\n");

  auto ovf = compile_text(one_rank("let big = 9223372036854775807\nlet x = big + 1"));
  BOOST_TEST(contains(ovf.message(), "t.sched:4:13: error: integer overflow in 9223372036854775807 + 1"), ovf.message());
  auto mul = compile_text(one_rank("let x = 4294967296 * 4294967296"));
  BOOST_TEST(contains(mul.message(), "error: integer overflow in 4294967296 * 4294967296"), mul.message());
  auto div0 = compile_text(one_rank("let x = 1 / (1 - 1)"));
  BOOST_TEST(contains(div0.message(), "t.sched:3:11: error: division by zero"), div0.message());
  auto mod0 = compile_text(one_rank("let x = 1 % 0"));
  BOOST_TEST(contains(mod0.message(), "error: remainder by zero"), mod0.message());
  auto neg = compile_text(one_rank("let m = -9223372036854775807 - 1\nlet x = m / -1"));
  BOOST_TEST(contains(neg.message(), "error: integer overflow in division"), neg.message());
  auto absmin = compile_text(one_rank("let m = -9223372036854775807 - 1\nlet x = abs(m)"));
  BOOST_TEST(contains(absmin.message(), "error: integer overflow in abs"), absmin.message());
  auto fn = compile_text(one_rank("let x = pow(2, 3)"));
  BOOST_TEST(contains(fn.message(), "error: unknown function 'pow' (available: min, max, abs, deferred)"), fn.message());
  auto absargs = compile_text(one_rank("let x = abs(1, 2)"));
  BOOST_TEST(contains(absargs.message(), "error: abs takes one argument"), absargs.message());
  auto minargs = compile_text(one_rank("let x = min()"));
  BOOST_TEST(contains(minargs.message(), "error: min takes at least one argument"), minargs.message());
}

BOOST_AUTO_TEST_CASE(deferred_counts_pending_weight_gradients) {
  auto c = compile_text(one_rank("F 0; F 0; I 0; I 0\nF 0.(10 + deferred())\nW\nF 0.(20 + deferred())\nrepeat deferred() { W }", 30));
  BOOST_TEST_REQUIRE(c.ok(), c.message());
  BOOST_TEST(c.actions() == "rank 0: F0.0 F0.1 I0.0 I0.1 F0.12 W0.0 F0.21 W0.1\n");
  auto outside = compile_text(
      "schedule s(ranks = 1, microbatches = 1) {\n  let d = deferred()\n  rank r { F 0; B 0 }\n}\n");
  BOOST_TEST(contains(outside.message(), "t.sched:2:11: error: deferred() counts a rank's pending W: it works only inside a rank program"),
             outside.message());
  auto args = compile_text(one_rank("let d = deferred(1)"));
  BOOST_TEST(contains(args.message(), "error: deferred() takes no argument"), args.message());
}

BOOST_AUTO_TEST_CASE(counters_and_explicit_indices) {
  // F 0 is the next unissued microbatch; an explicit index marks it issued; B and I share a counter.
  auto c = compile_text(one_rank("F 0.1\nF 0\nF 0\nF 0\nB 0.2\nB 0\nI 0\nI 0\nW\nW 0.3", 4));
  BOOST_TEST_REQUIRE(c.ok(), c.message());
  BOOST_TEST(c.actions() == "rank 0: F0.1 F0.0 F0.2 F0.3 B0.2 B0.0 I0.1 I0.3 W0.1 W0.3\n");
  BOOST_TEST(c.validation() == "");

  // W c: the oldest deferred I of chunk c; W c.m: that one.
  auto two = compile_text(R"(
schedule s(ranks = 1, microbatches = 2) {
  pipeline main stages = 2
  place rank r { chunk 0 = main[0]; chunk 1 = main[1] }
  rank r {
    F 0; F 0; F 1; F 1
    I 1; I 0; I 1; I 0
    W 0
    W
    W 1.1
    W
  }
}
)");
  BOOST_TEST_REQUIRE(two.ok(), two.message());
  BOOST_TEST(two.actions() == "rank 0: F0.0 F0.1 F1.0 F1.1 I1.0 I0.0 I1.1 I0.1 W0.0 W1.0 W1.1 W0.1\n");
  BOOST_TEST(two.validation() == "");

  auto none = compile_text(one_rank("F 0\nW", 1));
  BOOST_TEST(contains(none.message(), "t.sched:4:1: error: W: no deferred weight gradient to run (no I is waiting for its W)"),
             none.message());
  auto chunk_none = compile_text(one_rank("F 0; B 0\nW 0", 1));
  BOOST_TEST(contains(chunk_none.message(), "error: W 0: chunk 0 has no deferred weight gradient"), chunk_none.message());
  auto specific = compile_text(one_rank("F 0; F 0; I 0\nW 0.1", 2));
  BOOST_TEST(contains(specific.message(), "t.sched:4:1: error: W0.1 has no I0.1 before it on rank 0"), specific.message());
  auto exhausted = compile_text(one_rank("F 0; F 0; F 0", 2));
  BOOST_TEST(contains(exhausted.message(), "t.sched:3:11: error: F 0: every microbatch of chunk 0 already has one (its pipeline carries 2)"),
             exhausted.message());
  auto backward = compile_text(one_rank("F 0; B 0; I 0", 1));
  BOOST_TEST(contains(backward.message(), "error: B/I 0: every microbatch of chunk 0 already has one"), backward.message());
  auto chunk = compile_text(one_rank("F 1", 1));
  BOOST_TEST(contains(chunk.message(), "t.sched:3:3: error: rank 0 holds 1 chunk (chunk 0), not chunk 1"), chunk.message());
  auto mb = compile_text(one_rank("F 0.5", 2));
  BOOST_TEST(contains(mb.message(), "t.sched:3:5: error: microbatch 5 is out of range: chunk 0's pipeline carries microbatches 0..1"),
             mb.message());
}

BOOST_AUTO_TEST_CASE(overlapped_pairs) {
  auto c = compile_text(one_rank("F 0; F 0\nF 0 & B 0\nF 0 & I 0\nF 0 & F 0\nW", 6));
  BOOST_TEST_REQUIRE(c.ok(), c.message());
  BOOST_TEST(c.actions() == "rank 0: F0.0 F0.1 F0.2+B0.0 F0.3+I0.1 F0.4+F0.5 W0.1\n");
  BOOST_TEST(c.sched->programs[0][2].is_pair());

  auto backward_first = compile_text(one_rank("F 0\nB 0 & F 0", 2));
  BOOST_TEST(contains(backward_first.message(),
                      "t.sched:4:1: error: an overlapped pair starts with a forward: 'F a & B b', 'F a & I b' or 'F a & F b'"),
             backward_first.message());
  auto with_w = compile_text(one_rank("F 0; I 0\nF 0 & W", 2));
  BOOST_TEST(contains(with_w.message(), "error: an overlapped pair starts with a forward"), with_w.message());
}

BOOST_AUTO_TEST_CASE(programs_share_counters_and_see_only_their_parameters) {
  auto c = compile_text(R"(
program warmup(n) { repeat n { F 0 } }
program drain(n, kind) {
  repeat n { if kind == 0 { B 0 } else { I 0 } }
}
program weights() { repeat deferred() { W } }
schedule s(ranks = 2, microbatches = 3) {
  rank r {
    warmup(microbatches)
    drain(microbatches, r)
    weights()
  }
}
)");
  BOOST_TEST_REQUIRE(c.ok(), c.message());
  BOOST_TEST(c.actions() ==
             "rank 0: F0.0 F0.1 F0.2 B0.0 B0.1 B0.2\n"
             "rank 1: F0.0 F0.1 F0.2 I0.0 I0.1 I0.2 W0.0 W0.1 W0.2\n");
  BOOST_TEST(c.validation() == "");

  auto hidden = compile_text(
      "program p(n) { F 0.r }\nschedule s(ranks = 1, microbatches = 1) {\n  rank r { p(1) }\n}\n");
  BOOST_TEST(contains(hidden.message(), "t.sched:1:20: error: unknown name 'r'"), hidden.message());
  auto arity = compile_text("program p(n) { F 0 }\nschedule s(ranks = 1, microbatches = 1) {\n  rank r { p(1, 2) }\n}\n");
  BOOST_TEST(contains(arity.message(), "t.sched:3:12: error: program 'p' takes 1 arguments, not 2"), arity.message());
  auto unknown = compile_text("schedule s(ranks = 1, microbatches = 1) {\n  rank r { q() }\n}\n");
  BOOST_TEST(contains(unknown.message(), "t.sched:2:12: error: unknown program 'q'"), unknown.message());
  auto twice = compile_text("program p() { }\nprogram p() { }\nschedule s(ranks = 1, microbatches = 1) { rank r { } }\n");
  BOOST_TEST(contains(twice.message(), "t.sched:2:1: error: program 'p' is defined twice"), twice.message());
  BOOST_TEST(contains(twice.message(), "t.sched:1:1: note: first defined here"), twice.message());
  auto recursive = compile_text("program p() { p() }\nschedule s(ranks = 1, microbatches = 1) { rank r { p() } }\n");
  BOOST_TEST(contains(recursive.message(), "error: programs call each other deeper than 64 levels"), recursive.message());
  auto dup_param = compile_text("program p(a, a) { }\nschedule s(ranks = 1, microbatches = 1) { rank r { } }\n");
  BOOST_TEST(contains(dup_param.message(), "t.sched:1:14: error: parameter 'a' is declared twice"), dup_param.message());
}

BOOST_AUTO_TEST_CASE(overlap_recipes_are_parsed_into_the_ir) {
  const std::string recipe = R"(
overlap mine {
  stream comm (sms = 24) { b.combine f.dispatch b.dispatch f.combine }
  stream compute { f.attn b.mlp b.mlp.w f.mlp b.attn b.attn.w }
}
overlap pairs {
  stream comm (sms = 8) { f.dispatch f2.dispatch f.combine f2.combine }
  stream compute { f.attn f2.attn f.mlp f2.mlp }
}
)";
  auto c = compile_text(recipe + "schedule s(ranks = 1, microbatches = 4) {\n  overlap mine\n  overlap pairs\n"
                                 "  rank r { F 0; F 0 & B 0; F 0 & F 0; B 0; B 0; B 0 }\n}\n");
  BOOST_TEST_REQUIRE(c.ok(), c.message());
  BOOST_TEST(c.validation() == "");
  const auto& s = *c.sched;
  BOOST_TEST_REQUIRE(s.overlap.has_value());
  BOOST_TEST(s.overlap->name == "mine");
  BOOST_TEST_REQUIRE(s.overlap->streams.size() == 2u);
  BOOST_TEST(s.overlap->streams[0].name == "comm");
  BOOST_TEST(s.overlap->streams[0].sms == 24);
  BOOST_TEST(s.overlap->streams[1].sms == 0);
  std::string order;
  for (const auto& it : s.overlap->streams[1].order) order += schedule::to_string(it) + " ";
  BOOST_TEST(order == "f.attn b.mlp b.mlp.w f.mlp b.attn b.attn.w ");
  BOOST_TEST(s.overlap->streams[1].order[2].weight);
  BOOST_TEST_REQUIRE(s.forward_overlap.has_value());
  BOOST_TEST(s.forward_overlap->name == "pairs");
  BOOST_TEST((s.forward_overlap->streams[0].order[1].side == schedule::pair_side::f2));
  // The built-in DeepSeek-V3 recipe file gives the same recipe as the runtime's default.
  auto ds = compile_files({{"main.sched", "import \"deepseek-v3.sched\"\nschedule s(ranks = 1, microbatches = 1) {\n"
                                          "  overlap deepseek_v3\n  rank r { F 0; B 0 }\n}\n"},
                           {"deepseek-v3.sched", read_file(source_dir() / "schedules/overlap/deepseek-v3.sched")}},
                          "main.sched");
  BOOST_TEST_REQUIRE(ds.ok(), ds.message());
  const auto builtin = schedule::deepseek_v3_recipe();
  BOOST_TEST_REQUIRE(ds.sched->overlap.has_value());
  for (std::size_t i = 0; i < 2; ++i) {
    const auto& a = builtin.streams[i];
    auto b = std::find_if(ds.sched->overlap->streams.begin(), ds.sched->overlap->streams.end(),
                          [&](const auto& st) { return st.name == a.name; });
    BOOST_TEST_REQUIRE((b != ds.sched->overlap->streams.end()));
    BOOST_TEST((b->order == a.order));
    BOOST_TEST(b->sms == a.sms);
  }
}

BOOST_AUTO_TEST_CASE(overlap_recipes_are_checked) {
  auto schedule_using = [](const std::string& recipe) {
    return compile_text(recipe + "\nschedule s(ranks = 1, microbatches = 1) {\n  overlap r1\n  rank r { F 0; B 0 }\n}\n");
  };
  const std::string compute = "  stream compute { f.attn b.mlp b.mlp.w f.mlp b.attn b.attn.w }\n";
  const std::string comm = "  stream comm (sms = 20) { b.combine f.dispatch b.dispatch f.combine }\n";

  auto unknown_stream = schedule_using("overlap r1 {\n" + comm + compute + "  stream copy { }\n}");
  BOOST_TEST(contains(unknown_stream.message(),
                      "t.sched:4:3: error: unknown stream 'copy': a recipe has a 'compute' and a 'comm' stream"),
             unknown_stream.message());
  auto wrong = schedule_using("overlap r1 {\n  stream comm { b.combine b.dispatch f.combine }\n"
                              "  stream compute { f.attn f.dispatch b.mlp b.mlp.w f.mlp b.attn b.attn.w }\n}");
  BOOST_TEST(contains(wrong.message(), "t.sched:3:27: error: f.dispatch is communication: it belongs on the comm stream"),
             wrong.message());
  auto computation = schedule_using("overlap r1 {\n  stream comm { f.attn b.combine f.dispatch b.dispatch f.combine }\n"
                                    "  stream compute { b.mlp b.mlp.w f.mlp b.attn b.attn.w }\n}");
  BOOST_TEST(contains(computation.message(), "f.attn is computation: it belongs on the compute stream"), computation.message());
  auto dup = schedule_using("overlap r1 {\n" + comm +
                            "  stream compute { f.attn b.mlp b.mlp.w f.mlp b.attn b.attn.w f.attn }\n}");
  BOOST_TEST(contains(dup.message(), "t.sched:3:63: error: f.attn appears twice in recipe 'r1'"), dup.message());
  BOOST_TEST(contains(dup.message(), "t.sched:3:20: note: first listed here"), dup.message());
  auto missing = schedule_using("overlap r1 {\n" + comm + "  stream compute { f.attn b.mlp b.mlp.w f.mlp b.attn }\n}");
  BOOST_TEST(contains(missing.message(), "t.sched:1:1: error: recipe 'r1' does not place b.attn.w"), missing.message());
  auto deadlock = schedule_using("overlap r1 {\n  stream comm { f.dispatch b.combine b.dispatch f.combine }\n"
                                 "  stream compute { b.mlp f.attn b.mlp.w f.mlp b.attn b.attn.w }\n}");
  BOOST_TEST(contains(deadlock.message(), "t.sched:1:1: error: recipe 'r1' deadlocks: each stream waits at its head for the other"),
             deadlock.message());
  BOOST_TEST(contains(deadlock.message(), "t.sched:3:20: note: the compute stream stops at b.mlp, which needs b.combine"),
             deadlock.message());
  BOOST_TEST(contains(deadlock.message(), "t.sched:2:17: note: the comm stream stops at f.dispatch, which needs f.attn"),
             deadlock.message());
  auto sms_compute = schedule_using("overlap r1 {\n" + comm + "  stream compute (sms = 4) { f.attn b.mlp b.mlp.w f.mlp b.attn b.attn.w }\n}");
  BOOST_TEST(contains(sms_compute.message(), "error: an SM budget belongs on the comm stream; compute gets the rest"),
             sms_compute.message());
  auto sms_range = schedule_using("overlap r1 {\n  stream comm (sms = 0) { b.combine f.dispatch b.dispatch f.combine }\n" + compute + "}");
  BOOST_TEST(contains(sms_range.message(), "t.sched:2:22: error: sms must be between 1 and 1024"), sms_range.message());
  auto component = schedule_using("overlap r1 {\n" + comm + "  stream compute { f.attn f.norm }\n}");
  BOOST_TEST(contains(component.message(), "error: unknown component 'norm' (expected attn, dispatch, mlp or combine)"),
             component.message());
  auto weight = schedule_using("overlap r1 {\n  stream comm { b.combine f.dispatch b.dispatch.w f.combine }\n" + compute + "}");
  BOOST_TEST(contains(weight.message(), "b.dispatch.w is not a component of a pair"), weight.message());
  auto unknown_recipe = compile_text("schedule s(ranks = 1, microbatches = 1) {\n  overlap nothing\n  rank r { F 0; B 0 }\n}\n");
  BOOST_TEST(contains(unknown_recipe.message(), "t.sched:2:3: error: unknown overlap recipe 'nothing'"), unknown_recipe.message());
  auto twice = compile_text("overlap r1 {\n" + comm + compute + "}\noverlap r1 {\n" + comm + compute +
                            "}\nschedule s(ranks = 1, microbatches = 1) { rank r { } }\n");
  BOOST_TEST(contains(twice.message(), "t.sched:5:1: error: overlap recipe 'r1' is defined twice"), twice.message());
  auto two_fb = compile_text("overlap r1 {\n" + comm + compute + "}\noverlap r2 {\n" + comm + compute +
                             "}\nschedule s(ranks = 1, microbatches = 1) {\n  overlap r1\n  overlap r2\n  rank r { }\n}\n");
  BOOST_TEST(contains(two_fb.message(), "error: the schedule already follows recipe 'r1' for F&B pairs"), two_fb.message());
}

BOOST_AUTO_TEST_CASE(experts_block) {
  auto c = compile_text(R"(
schedule s(ranks = 1, microbatches = 1) {
  experts { redundant = 2 * 4; replan_every = 10
            window = 3
            planner = global }
  rank r { F 0; B 0 }
}
)");
  BOOST_TEST_REQUIRE(c.ok(), c.message());
  BOOST_TEST_REQUIRE(c.sched->experts.has_value());
  BOOST_TEST(c.sched->experts->redundant == 8);
  BOOST_TEST(c.sched->experts->replan_interval == 10);
  BOOST_TEST(c.sched->experts->window == 3);
  BOOST_TEST(c.sched->experts->planner == "global");

  // A top-level block applies to the file's schedule; defaults for what it leaves out.
  auto top = compile_text("experts { redundant = 1 }\nschedule s(ranks = 1, microbatches = 1) { rank r { F 0; B 0 } }\n");
  BOOST_TEST_REQUIRE(top.ok(), top.message());
  BOOST_TEST_REQUIRE(top.sched->experts.has_value());
  BOOST_TEST(top.sched->experts->redundant == 1);
  BOOST_TEST(top.sched->experts->window == 1);
  BOOST_TEST(top.sched->experts->planner == "hierarchical");
  auto none = compile_text("schedule s(ranks = 1, microbatches = 1) { rank r { F 0; B 0 } }\n");
  BOOST_TEST(!none.sched->experts.has_value());

  auto key = compile_text("schedule s(ranks = 1, microbatches = 1) {\n  experts { budget = 3 }\n  rank r { }\n}\n");
  BOOST_TEST(contains(key.message(), "t.sched:2:13: error: unknown experts setting 'budget' (expected redundant, replan_every, window or planner)"),
             key.message());
  auto planner = compile_text("schedule s(ranks = 1, microbatches = 1) {\n  experts { planner = greedy }\n  rank r { }\n}\n");
  BOOST_TEST(contains(planner.message(), "error: unknown planner 'greedy' (expected hierarchical or global)"), planner.message());
  auto window = compile_text("schedule s(ranks = 1, microbatches = 1) {\n  experts { window = 0 }\n  rank r { }\n}\n");
  BOOST_TEST(contains(window.message(), "t.sched:2:22: error: window is 0; it must be between 1 and 1048576"), window.message());
  auto twice = compile_text("experts { }\nexperts { }\nschedule s(ranks = 1, microbatches = 1) { rank r { } }\n");
  BOOST_TEST(contains(twice.message(), "t.sched:2:1: error: a file holds at most one 'experts' block"), twice.message());
}

BOOST_AUTO_TEST_CASE(imports_relative_paths_cycles_and_depth) {
  const files tree = {
      {"main.sched",
       "import \"lib/recipes.sched\"\n"
       "schedule s(ranks = 2, microbatches = 2) {\n  overlap lib_recipe\n  rank r { fill(microbatches) drain(microbatches) }\n}\n"},
      // Relative to the importing file: lib/recipes.sched imports lib/programs.sched and ../shared.sched.
      {"lib/recipes.sched",
       "import \"programs.sched\"\nimport \"../shared.sched\"\n"
       "overlap lib_recipe {\n  stream comm (sms = 20) { b.combine f.dispatch b.dispatch f.combine }\n"
       "  stream compute { f.attn b.mlp b.mlp.w f.mlp b.attn b.attn.w }\n}\n"},
      {"lib/programs.sched", "import \"../shared.sched\"\nprogram fill(n) { repeat n { F 0 } }\n"},
      {"shared.sched", "program drain(n) { repeat n { B 0 } }\n"},  // imported twice: once is enough
  };
  auto c = compile_files(tree, "main.sched");
  BOOST_TEST_REQUIRE(c.ok(), c.message());
  BOOST_TEST(c.actions() == "rank 0: F0.0 F0.1 B0.0 B0.1\nrank 1: F0.0 F0.1 B0.0 B0.1\n");
  BOOST_TEST(c.sched->overlap->name == "lib_recipe");

  const files cycle = {{"a.sched", "import \"b.sched\"\nschedule s(ranks = 1, microbatches = 1) { rank r { F 0; B 0 } }\n"},
                       {"b.sched", "import \"c.sched\"\n"},
                       {"c.sched", "\n  import \"./a.sched\"\n"}};
  auto cyc = compile_files(cycle, "a.sched");
  BOOST_TEST_REQUIRE(!cyc.ok());
  BOOST_TEST(contains(cyc.message(), "c.sched:2:3: error: import cycle: './a.sched' imports itself, directly or through other files"),
             cyc.message());
  auto self = compile_files({{"a.sched", "import \"a.sched\"\nschedule s(ranks = 1, microbatches = 1) { rank r { } }\n"}}, "a.sched");
  BOOST_TEST(contains(self.message(), "a.sched:1:1: error: import cycle"), self.message());

  files chain;
  for (int i = 0; i < 20; ++i) chain["f" + std::to_string(i) + ".sched"] = "import \"f" + std::to_string(i + 1) + ".sched\"\n";
  chain["f20.sched"] = "\n";
  chain["f0.sched"] += "schedule s(ranks = 1, microbatches = 1) { rank r { F 0; B 0 } }\n";
  auto deep = compile_files(chain, "f0.sched");
  BOOST_TEST_REQUIRE(!deep.ok());
  BOOST_TEST(contains(deep.message(), "f16.sched:1:1: error: imports nest deeper than 16 files"), deep.message());

  auto missing = compile_files({{"m.sched", "// header\nimport \"nowhere.sched\"\nschedule s(ranks = 1, microbatches = 1) { rank r { } }\n"}},
                               "m.sched");
  BOOST_TEST(contains(missing.message(), "m.sched:2:1: error: nowhere.sched: cannot open"), missing.message());
  auto not_string = compile_text("import nowhere\n");
  BOOST_TEST(contains(not_string.message(), "t.sched:1:8: error: expected a file name in quotes after 'import', found 'nowhere'"),
             not_string.message());
}

BOOST_AUTO_TEST_CASE(comments) {
  auto c = compile_text(R"(// a line comment
/* a block comment
   over lines */ schedule s(ranks /* inline */ = 1, microbatches = 2) { // trailing
  rank r {
    F 0 /* between */ ; F 0 // F 0 here is commented out
    /* B 0 */ B 0; B 0
  }
}
/* a closed comment at the end */)");
  BOOST_TEST_REQUIRE(c.ok(), c.message());
  BOOST_TEST(c.actions() == "rank 0: F0.0 F0.1 B0.0 B0.1\n");
}

BOOST_AUTO_TEST_CASE(several_schedules_in_a_file) {
  const std::string text =
      "schedule first(ranks = 1, microbatches = 1) { rank r { F 0; B 0 } }\n"
      "schedule second(ranks = 1, microbatches = 2) { rank r { F 0; F 0; B 0; B 0 } }\n";
  auto pick = compile_text(text, {}, "second");
  BOOST_TEST_REQUIRE(pick.ok(), pick.message());
  BOOST_TEST(pick.sched->name == "second");
  BOOST_TEST(pick.actions() == "rank 0: F0.0 F0.1 B0.0 B0.1\n");
  auto first = compile_text(text, {}, "first");
  BOOST_TEST(first.actions() == "rank 0: F0.0 B0.0\n");
  auto ambiguous = compile_text(text);
  BOOST_TEST(contains(ambiguous.message(), "t.sched:2:1: error: the file defines several schedules (first, second); choose one by name"),
             ambiguous.message());
  auto unknown = compile_text(text, {}, "third");
  BOOST_TEST(contains(unknown.message(), "t.sched:1:1: error: the file has no schedule named 'third'"), unknown.message());
  auto none = compile_text("// nothing here\n");
  BOOST_TEST(contains(none.message(), "t.sched:1:1: error: this file defines no schedule"), none.message());
  auto recipes_only = compile_text(read_file(source_dir() / "schedules/overlap/deepseek-v3.sched"));
  BOOST_TEST(contains(recipes_only.message(), "this file defines no schedule (it holds overlap recipes, which a schedule imports)"),
             recipes_only.message());
  auto no_ranks = compile_text("schedule s(workers = 1, microbatches = 1) { rank r { } }\n");
  BOOST_TEST(contains(no_ranks.message(), "t.sched:1:1: error: schedule 's' needs a parameter named 'ranks'"), no_ranks.message());
  auto no_rank_program = compile_text("schedule s(ranks = 1, microbatches = 1) { }\n");
  BOOST_TEST(contains(no_rank_program.message(), "t.sched:1:1: error: schedule 's' has no 'rank r { ... }' program"),
             no_rank_program.message());
}

// Every built-in schedule reproduces the shared reference orders, and validates across sizes.
BOOST_AUTO_TEST_CASE(builtin_schedules) {
  int seen = 0;
  for (const auto& entry : fs::directory_iterator(cases_dir() / "schedules")) {
    const std::string stem = entry.path().stem().string();  // NAME-rR-mM
    const std::regex form("^(.+)-r([0-9]+)-m([0-9]+)$");
    std::smatch m;
    BOOST_TEST_REQUIRE(std::regex_match(stem, m, form), stem);
    dsl::load_request req;
    req.path = (source_dir() / "schedules" / (m[1].str() + ".sched")).string();
    req.set = {{"ranks", m[2].str()}, {"microbatches", m[3].str()}};
    auto l = dsl::load_schedule(req);
    BOOST_TEST_REQUIRE(l.has_value(), stem << ": " << (l ? "" : l.error().message));
    BOOST_TEST(schedule::format_actions(l->sched) == read_file(entry.path()), stem);
    ++seen;
  }
  BOOST_TEST(seen >= 6);

  struct sweep {
    const char* file;
    std::vector<int> ranks;
    int min_mbs_per_rank;  // microbatches from ranks * this
    int step;              // ... in steps of this
  };
  const std::vector<sweep> sweeps = {
      {"gpipe", {1, 2, 3, 5}, 0, 1},       {"1f1b", {1, 2, 3, 5}, 0, 1},
      {"zb-h1", {1, 2, 3, 5}, 0, 1},       {"dualpipe", {2, 4, 6}, 2, 2},
      {"dualpipev", {1, 2, 3, 4}, 2, 1},   {"interleaved-1f1b", {1, 2, 3, 4}, 1, 0},
      {"prefill-overlap", {1, 2, 3}, 0, 2},
  };
  for (const auto& sw : sweeps)
    for (int r : sw.ranks)
      for (int k = 0; k < 4; ++k) {
        int mbs = std::max(1, r * sw.min_mbs_per_rank) + k * (sw.step == 0 ? r : sw.step);
        if (std::string(sw.file) == "prefill-overlap") mbs = 2 + 2 * k;
        dsl::load_request req;
        req.path = (source_dir() / "schedules" / (std::string(sw.file) + ".sched")).string();
        req.set = {{"ranks", std::to_string(r)}, {"microbatches", std::to_string(mbs)}};
        auto l = dsl::load_schedule(req);
        BOOST_TEST(l.has_value(), sw.file << " ranks=" << r << " microbatches=" << mbs << ": " << (l ? "" : l.error().message));
        if (!l) continue;
        auto t = sim::simulate_actions(l->sched, {});
        for (const auto& spans : t.spans)
          for (const auto& sp : spans) BOOST_TEST(sp.end >= 0);
      }
}

BOOST_AUTO_TEST_SUITE_END()

// ================================================================================================
BOOST_AUTO_TEST_SUITE(dsl_diagnostics)

BOOST_AUTO_TEST_CASE(several_independent_syntax_errors_in_one_run) {
  auto c = compile_text(
      "schedule s(ranks = 1, microbatches = 1) {\n"
      "  let = 3\n"
      "  rank r {\n"
      "    F 0 . .\n"
      "    let y 5\n"
      "    B 0\n"
      "  }\n"
      "}\n");
  BOOST_TEST_REQUIRE(!c.ok());
  BOOST_TEST(c.err.code == errc::parse_error);
  BOOST_TEST(contains(c.message(), "t.sched:2:7: error: expected a name after 'let', found '='"), c.message());
  BOOST_TEST(contains(c.message(), "t.sched:4:11: error: expected an expression, found '.'"), c.message());
  BOOST_TEST(contains(c.message(), "t.sched:5:11: error: expected '=' after the name, found '5'"), c.message());
  BOOST_TEST(contains(c.message(), "3 errors"), c.message());
  check_located(c.message(), "t.sched");
}

// After an error in a statement that opens a block on the same line, the parser resumes at the next
// statement: it does not take the block's '}' for the end of the rank program and invent errors after.
BOOST_AUTO_TEST_CASE(recovery_does_not_invent_errors) {
  auto c = compile_text(
      "schedule s(ranks = 1, microbatches = 1) {\n"
      "  let = 3\n"
      "  rank r {\n"
      "    F 0 +\n"
      "    repeat { B 0 }\n"
      "    for i 0..2 { }\n"
      "  }\n"
      "}\n");
  BOOST_TEST_REQUIRE(!c.ok());
  BOOST_TEST(contains(c.message(), "t.sched:2:7: error: expected a name after 'let', found '='"), c.message());
  BOOST_TEST(contains(c.message(), "t.sched:5:5: error: expected an expression, found 'repeat'"), c.message());
  BOOST_TEST(contains(c.message(), "t.sched:6:11: error: expected 'in' after the loop variable, found '0'"), c.message());
  BOOST_TEST(!contains(c.message(), "found 'for'"), c.message());
  BOOST_TEST(!contains(c.message(), "t.sched:7:"), c.message());
  BOOST_TEST(!contains(c.message(), "t.sched:8:"), c.message());
  BOOST_TEST(contains(c.message(), "3 errors"), c.message());
}

BOOST_AUTO_TEST_CASE(several_name_and_evaluation_errors_in_one_run) {
  // Unknown names are all reported, executed or not.
  auto names = compile_text(
      "schedule s(ranks = 2, microbatches = 1) {\n"
      "  let warmup = 3\n"
      "  rank r {\n"
      "    repeat warm { F 0 }\n"
      "    if 0 { F 0.nowhere }\n"
      "    B 0.(microbatch - 1)\n"
      "  }\n"
      "}\n");
  BOOST_TEST_REQUIRE(!names.ok());
  BOOST_TEST(contains(names.message(), "t.sched:4:12: error: unknown name 'warm' (did you mean 'warmup'?)"), names.message());
  BOOST_TEST(contains(names.message(), "t.sched:5:16: error: unknown name 'nowhere'"), names.message());
  BOOST_TEST(contains(names.message(), "t.sched:6:10: error: unknown name 'microbatch' (did you mean 'microbatches'?)"),
             names.message());
  BOOST_TEST(contains(names.message(), "3 errors"), names.message());
  check_located(names.message(), "t.sched");

  // One rank's error does not hide another's.
  auto ranks = compile_text(
      "schedule s(ranks = 3, microbatches = 1) {\n  rank r {\n    F 0.r\n  }\n}\n");
  BOOST_TEST_REQUIRE(!ranks.ok());
  BOOST_TEST(contains(ranks.message(), "t.sched:3:9: error: microbatch 1 is out of range"), ranks.message());
  BOOST_TEST(contains(ranks.message(), "microbatch 2 is out of range"), ranks.message());
  BOOST_TEST(contains(ranks.message(), "2 errors"), ranks.message());
  check_located(ranks.message(), "t.sched");
}

BOOST_AUTO_TEST_CASE(every_error_is_located_with_a_caret) {
  const std::vector<std::string> bad = {
      "schedule s(ranks = 1, microbatches = 1) { rank r { F 0 $ } }\n",
      "schedule s(ranks = 1, microbatches = 1) { rank r { F 0; B 0 } \n",
      "schedule s(ranks = 1, microbatches = 1) {\n\trank r { F (1 + }\n}\n",
      "schedule s(ranks = 1, microbatches = 1) { rank r { F 0x1 } }\n",
      "import \"no end\nschedule s(ranks = 1, microbatches = 1) { rank r { } }\n",
      "schedule s(ranks = 1, microbatches = 1) { rank r { } } /* open\n",
      "schedule s(ranks = 1, microbatches = 1) { rank r { let x = 99999999999999999999 } }\n",
      "schedule s(ranks = 1, microbatches = 1) { rank r { F 0.1 } }\n",
      "schedule s(ranks = 1, microbatches = 1) { pipeline p stages = 0\n rank r { } }\n",
      "schedule s(ranks = 1, microbatches = 1) { rank r { chunk 0 = main[0] } }\n",
      std::string("schedule s(ranks = 1, microbatches = 1) { rank r { F 0 \x01\x02\xff } }\n"),
      "schedule s(ranks = 1, microbatches = 1) { rank r { F 0 } }\nschedule s(ranks = 1) { }\n",
      "program p(a) { F a }\nschedule s(ranks = 1, microbatches = 1) { rank r { p(2) } }\n",
  };
  for (const auto& text : bad) {
    BOOST_TEST_CONTEXT(text) {
      auto c = compile_text(text);
      BOOST_TEST_REQUIRE(!c.ok());
      check_located(c.message(), "t.sched");
    }
  }
  // A tab in the line keeps the caret under the right column; a very long line is cut around it.
  auto tab = compile_text("schedule s(ranks = 1, microbatches = 1) {\n\trank r { F ( }\n}\n");
  BOOST_TEST(contains(tab.message(), "t.sched:2:15: error: expected an expression, found '}'\n 2 | \trank r { F ( }\n   | \t             ^"),
             tab.message());
  auto wide = compile_text("schedule s(ranks = 1, microbatches = 1) { rank r { " + std::string(500, ' ') + "$ } }\n");
  BOOST_TEST(contains(wide.message(), "t.sched:1:552: error: unexpected character '$'"), wide.message());
  check_located(wide.message(), "t.sched");
  BOOST_TEST(wide.message().size() < 600u, wide.message());
}

BOOST_AUTO_TEST_CASE(unknown_set_parameter_lists_the_valid_ones) {
  auto c = compile_text("schedule s(ranks, microbatches, chunks = 2) { rank r { } }\n", {{"ranks", "1"}, {"rank", "2"}});
  BOOST_TEST_REQUIRE(!c.ok());
  BOOST_TEST(c.err.code == errc::invalid_argument);
  BOOST_TEST(contains(c.message(), "--set rank: schedule 's' has no parameter 'rank' (its parameters: ranks, microbatches, chunks)"),
             c.message());
  auto assignment = dsl::parse_assignment("ranks");
  BOOST_TEST(!assignment.has_value());
  auto good = dsl::parse_assignment("ranks=4");
  BOOST_TEST_REQUIRE(good.has_value());
  BOOST_TEST(good->first == "ranks");
  BOOST_TEST(good->second == "4");
}

BOOST_AUTO_TEST_CASE(rank_and_microbatch_counts_give_located_errors) {
  const std::string text = "schedule s(ranks, microbatches) {\n  rank r { F 0; B 0 }\n}\n";
  for (const char* ranks : {"0", "-3", "4097", "1000000"}) {
    auto c = compile_text(text, {{"ranks", ranks}, {"microbatches", "1"}});
    BOOST_TEST_REQUIRE(!c.ok());
    BOOST_TEST(contains(c.message(), std::string("t.sched:1:1: error: ranks = ") + ranks +
                                         " is out of range: it must be between 1 and 4096"),
               c.message());
    check_located(c.message(), "t.sched");
  }
  for (const char* mbs : {"0", "-1", "1048577", "100000000000"}) {
    auto c = compile_text(text, {{"ranks", "2"}, {"microbatches", mbs}});
    BOOST_TEST_REQUIRE(!c.ok());
    BOOST_TEST(contains(c.message(), std::string("t.sched:1:1: error: microbatches = ") + mbs +
                                         " is out of range: it must be between 1 and 1048576"),
               c.message());
  }
  auto pipe = compile_text("schedule s(ranks = 1, microbatches = 1) {\n  pipeline p stages = 1 microbatches = 0\n  rank r { }\n}\n");
  BOOST_TEST(contains(pipe.message(), "t.sched:2:40: error: pipeline p's microbatch count is 0; it must be between 1 and 1048576"),
             pipe.message());
  auto too_many = compile_text(
      "schedule s(ranks = 2, microbatches = 2) {\n  rank r {\n    repeat microbatches + 1 { F 0 }\n  }\n}\n");
  BOOST_TEST(contains(too_many.message(), "t.sched:3:31: error: F 0: every microbatch of chunk 0 already has one (its pipeline carries 2)"),
             too_many.message());
}

// The error code tells a caller what kind of failure it is; a user's own words cannot change it.
BOOST_AUTO_TEST_CASE(error_codes) {
  auto syntax = compile_text("schedule s(ranks = 1) { rank r { F } }\n");
  BOOST_TEST(syntax.err.code == errc::parse_error);
  auto require = compile_text("schedule s(ranks = 1, microbatches = 1) {\n  require 0\n  rank r { }\n}\n");
  BOOST_TEST(require.err.code == errc::invalid_schedule);
  auto loop = compile_text(one_rank("repeat 20000000 { }"));
  BOOST_TEST(loop.err.code == errc::limit_exceeded);
  // A requirement whose message happens to say "limit" or "exceeds" is still a broken requirement.
  auto wording = compile_text(
      "schedule s(ranks = 1, microbatches = 1) {\n  require 0, \"microbatches exceed the memory limit\"\n  rank r { }\n}\n");
  BOOST_TEST_REQUIRE(!wording.ok());
  BOOST_TEST(wording.err.code == errc::invalid_schedule, "a require's message changed the error code to " << wording.err.code);
  auto missing = compile_files({}, "none.sched");
  BOOST_TEST(missing.err.code == errc::io_error);
}

BOOST_AUTO_TEST_CASE(validation_errors_point_at_the_language_source) {
  auto c = compile_text(
      "schedule s(ranks = 2, microbatches = 2) {\n"
      "  rank r {\n"
      "    F 0; F 0\n"
      "    if r == 0 { B 0.1 } else { B 0.0 }\n"
      "    B 0\n"
      "  }\n"
      "}\n");
  BOOST_TEST_REQUIRE(c.ok(), c.message());
  const std::string v = c.validation();
  BOOST_TEST(contains(v, "t.sched:4:17: error: rank 0 needs the gradient main[1]->main[0] of microbatch 1 before the gradient "
                         "main[1]->main[0] of microbatch 0, but rank 1 sends them the other way round"),
             v);
  check_located(v, "t.sched");
}

BOOST_AUTO_TEST_SUITE_END()

// ================================================================================================
BOOST_AUTO_TEST_SUITE(dsl_limits)

namespace {

// Checks that compiling failed with limit_exceeded or a located error that names the limit, and did
// not hang: the 60 s guard catches a limit that is not enforced (a loop, an exponential blow-up), not a
// slow machine; how fast the limits cut in is a benchmark's business.
void expect_limit(const compiled& c, const std::string& mentions) {
  BOOST_TEST_REQUIRE(!c.ok());
  BOOST_TEST(c.seconds < 60.0, "took " << c.seconds << " s");
  BOOST_TEST((c.err.code == errc::limit_exceeded || contains(c.message(), ": error: ")), c.message());
  BOOST_TEST(contains(c.message(), mentions), c.message());
}

}  // namespace

BOOST_AUTO_TEST_CASE(loop_trips) {
  auto rep = compile_text(one_rank("repeat 10000001 { }"));
  expect_limit(rep, "t.sched:3:8: error: loop would run 10000001 times; the limit is 10000000");
  BOOST_TEST(rep.err.code == errc::limit_exceeded);
  auto big = compile_text(one_rank("repeat 1000000000000 { F 0 }"));
  expect_limit(big, "the limit is 10000000");
  auto forl = compile_text(one_rank("for i in -5..10000000 { }"));
  expect_limit(forl, "t.sched:3:10: error: loop would run 10000005 times; the limit is 10000000");
  // The trip count of a for loop whose bounds are far apart does not overflow past the check.
  auto wide = compile_text(one_rank("for i in -9000000000000000000..9000000000000000000 { }"));
  expect_limit(wide, "the limit is 10000000");
}

BOOST_AUTO_TEST_CASE(evaluation_steps) {
  auto c = compile_text(one_rank("repeat 10000000 { repeat 10000000 { } }"));
  expect_limit(c, "evaluation takes more than 20000000 steps");
  auto calls = compile_text("program p(n) { p(n) p(n) }\n" + one_rank("p(1)"));
  expect_limit(calls, "programs call each other deeper than 64 levels");
}

BOOST_AUTO_TEST_CASE(emitted_actions) {
  auto c = compile_text("schedule s(ranks = 4096, microbatches = 1953) {\n  rank r { repeat 2000 { F 0.0 } }\n}\n");
  expect_limit(c, "t.sched:2:26: error: the schedule emits more than 8000000 actions, over the limit");
  BOOST_TEST(c.err.code == errc::limit_exceeded);
  // Pipelines whose (stage, microbatch) pairs alone exceed the limit are refused before any program runs.
  auto pairs = compile_text("schedule s(ranks = 4096, microbatches = 1048576) {\n  rank r { }\n}\n");
  expect_limit(pairs, "t.sched:1:1: error: the pipelines carry 4294967296 (stage, microbatch) pairs");
  BOOST_TEST(pairs.err.code == errc::limit_exceeded);
}

BOOST_AUTO_TEST_CASE(nesting_depth) {
  std::string parens = "let x = " + std::string(200000, '(') + "1" + std::string(200000, ')');
  auto p = compile_text(one_rank(parens));
  expect_limit(p, "error: nesting is deeper than the limit of 64 (blocks and parentheses)");
  BOOST_TEST(p.err.code == errc::limit_exceeded);
  std::string braces = std::string(200000, '{');
  auto b = compile_text(one_rank(braces));
  expect_limit(b, "nesting is deeper than the limit of 64");
  std::string minus = "let x = " + std::string(100000, '-') + "1";
  auto m = compile_text(one_rank(minus));
  expect_limit(m, "nesting is deeper than the limit of 64");
  // Within the limit: 30 parentheses in a rank program (each counts twice), 62 nested blocks.
  auto ok = compile_text(one_rank("let x = " + std::string(30, '(') + "1" + std::string(30, ')') + "\nF 0; B 0", 1));
  BOOST_TEST(ok.ok(), ok.message());
  ok = compile_text(one_rank(std::string(62, '{') + std::string(62, '}') + "\nF 0; B 0", 1));
  BOOST_TEST(ok.ok(), ok.message());
}

BOOST_AUTO_TEST_CASE(ranks_and_microbatches) {
  auto r = compile_text("schedule s(ranks = 5000, microbatches = 1) { rank r { } }\n");
  expect_limit(r, "t.sched:1:1: error: ranks = 5000 is out of range: it must be between 1 and 4096");
  auto m = compile_text("schedule s(ranks = 1, microbatches = 2000000) { rank r { } }\n");
  expect_limit(m, "it must be between 1 and 1048576");
  auto stages = compile_text("schedule s(ranks = 1, microbatches = 1) {\n  pipeline p stages = 300000\n  rank r { }\n}\n");
  expect_limit(stages, "t.sched:2:23: error: pipeline p's stage count is 300000; it must be between 1 and 262144");
  auto chunks = compile_text("schedule s(ranks = 1, microbatches = 1) {\n  pipeline p stages = 100\n"
                             "  place rank r { for c in 0..65 { chunk c = p[c] } }\n  rank r { }\n}\n");
  expect_limit(chunks, "the chunk number is 64; it must be between 0 and 63");
  // Action text and CSV readers have the same caps.
  auto text = parse_text("rank 5000: F0.0\n");
  BOOST_TEST_REQUIRE(!text.sched);
  BOOST_TEST(contains(text.sched.error().message, "a.txt:1:6: error: a rank number is too large (the limit is 4095)"),
             text.sched.error().message);
  auto mb = parse_text("rank 0: F0.2000000\n");
  BOOST_TEST(contains(mb.sched.error().message, "a microbatch number is too large (the limit is 1048575)"), mb.sched.error().message);
}

BOOST_AUTO_TEST_CASE(file_size) {
  const fs::path dir = fs::temp_directory_path() / ("loom-dsl-limits-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const fs::path big = dir / "big.sched";
  {
    std::ofstream out(big, std::ios::binary);
    out << "schedule s(ranks = 1, microbatches = 1) { rank r { F 0; B 0 } }\n";
    out << "//" << std::string(limits::max_file_bytes, 'x') << "\n";
  }
  dsl::load_request req;
  req.path = big.string();
  auto start = std::chrono::steady_clock::now();
  auto l = dsl::load_schedule(req);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  BOOST_TEST_REQUIRE(!l.has_value());
  BOOST_TEST(l.error().code == errc::limit_exceeded);
  BOOST_TEST(contains(l.error().message, "big.sched: file is"), l.error().message);
  BOOST_TEST(contains(l.error().message, "over the limit of 4194304"), l.error().message);
  BOOST_TEST(seconds < 60.0);  // refused before it is parsed: no hang

  // Imports together may not exceed the total: five files of 3.5 MB each.
  files many;
  std::string main = "schedule s(ranks = 1, microbatches = 1) { rank r { F 0; B 0 } }\n";
  for (int i = 0; i < 5; ++i) {
    main = "import \"part" + std::to_string(i) + ".sched\"\n" + main;
    many["part" + std::to_string(i) + ".sched"] = "//" + std::string(3'500'000, 'x') + "\n";
  }
  many["main.sched"] = main;
  auto total = compile_files(many, "main.sched");
  expect_limit(total, "error: the schedule and its imports exceed 16777216 bytes");
  fs::remove_all(dir);
}

BOOST_AUTO_TEST_SUITE_END()

// ================================================================================================
BOOST_AUTO_TEST_SUITE(schedule_validation)

namespace {

// Parses action text, validates, and returns the rendered rejection (checked to be located).
std::string rejection(const std::string& text) {
  auto p = parse_text(text);
  BOOST_TEST_REQUIRE(p.sched.has_value(), (p.sched ? "" : p.sched.error().message));
  const std::string v = p.validation();
  BOOST_TEST_REQUIRE(!v.empty(), "accepted:\n" << text);
  check_located(v, "a.txt");
  return v;
}

const char* const placed_1x1 = "pipeline main stages=1 microbatches=1\nplace rank 0: main[0]\n";

}  // namespace

BOOST_AUTO_TEST_CASE(missing_forward) {
  auto v = rejection("rank 0: F0.0 B0.0 B0.1\n");
  BOOST_TEST(contains(v, "a.txt:1:1: error: rank 0 never runs F0.1"), v);
  BOOST_TEST(contains(v, "a.txt:1:19: error: B0.1 runs before its forward F0.1 on rank 0"), v);
  auto backward = rejection("rank 0: F0.0 F0.1 B0.1\n");
  BOOST_TEST(contains(backward, "a.txt:1:1: error: rank 0 never runs the backward of chunk 0 microbatch 0 (B0.0, or I0.0 and W0.0)"),
             backward);
}

BOOST_AUTO_TEST_CASE(duplicate_action) {
  auto v = rejection("rank 0: F0.0 F0.0 B0.0\n");
  BOOST_TEST(contains(v, "a.txt:1:14: error: rank 0 runs F0.0 twice"), v);
  BOOST_TEST(contains(v, "a.txt:1:9: note: first run here, in F0.0"), v);
  auto second = rejection("rank 0: F0.0 B0.0 I0.0 W0.0\n");
  BOOST_TEST(contains(second, "a.txt:1:19: error: rank 0 runs a second backward for chunk 0 microbatch 0 (I0.0)"), second);
  BOOST_TEST(contains(second, "a.txt:1:14: note: the first is B0.0"), second);
  auto w = rejection("rank 0: F0.0 I0.0 W0.0 W0.0\n");
  BOOST_TEST(contains(w, "a.txt:1:24: error: rank 0 runs W0.0 twice"), w);
}

BOOST_AUTO_TEST_CASE(backward_before_forward_and_w_before_i) {
  auto b = rejection("rank 0: B0.0 F0.0\n");
  BOOST_TEST(contains(b, "a.txt:1:9: error: B0.0 runs before its forward F0.0 on rank 0"), b);
  auto pair = rejection("rank 0: F0.1+B0.0 F0.0 B0.1\n");  // B0.0 in the same action as... F0.1, not F0.0
  BOOST_TEST(contains(pair, "a.txt:1:9: error: B0.0 runs before its forward F0.0 on rank 0"), pair);
  auto w = rejection("rank 0: F0.0 W0.0 I0.0\n");
  BOOST_TEST(contains(w, "a.txt:1:14: error: W0.0 runs before its I0.0 on rank 0 (W is the deferred weight part of an I)"), w);
  auto after_b = rejection("rank 0: F0.0 B0.0 W0.0\n");
  BOOST_TEST(contains(after_b, "a.txt:1:19: error: W0.0 runs before its I0.0"), after_b);
  auto never_w = rejection("rank 0: F0.0 I0.0\n");
  BOOST_TEST(contains(never_w, "a.txt:1:14: error: rank 0 runs I0.0 but never its weight part W0.0"), never_w);
}

BOOST_AUTO_TEST_CASE(pairs) {
  auto w = rejection("rank 0: F0.0 I0.0 F0.1+W0.0 B0.1\n");
  BOOST_TEST(contains(w, "a.txt:1:19: error: an overlapped pair is a forward with a backward (F&B, F&I) or with another "
                         "forward (F&F), not F0.1+W0.0"),
             w);
  BOOST_TEST(contains(w, "a.txt:1:19: error: W cannot be part of an overlapped pair"), w);
  auto backward_first = rejection("rank 0: F0.0 B0.0+F0.1 B0.1\n");
  BOOST_TEST(contains(backward_first, "not B0.0+F0.1"), backward_first);
  // Valid pairs: F&B, F&I, F&F.
  auto ok = parse_text("rank 0: F0.0 F0.1+B0.0 F0.2+I0.1 F0.3+F0.4 W0.1 B0.2 B0.3 B0.4\n");
  BOOST_TEST(ok.validation() == "");
}

BOOST_AUTO_TEST_CASE(placement) {
  auto twice = rejection(
      "pipeline main stages=2 microbatches=1\nplace rank 0: main[0]\nplace rank 1: main[0]\nrank 0: F0.0 B0.0\nrank 1: F0.0 B0.0\n");
  BOOST_TEST(contains(twice, "a.txt:5:1: error: stage main[0] is placed twice: on rank 0 and on rank 1"), twice);
  BOOST_TEST(contains(twice, "a.txt:1:1: error: stage main[1] is not placed on any rank"), twice);
  auto depth = rejection(
      "pipeline a stages=1 microbatches=1\npipeline b stages=2 microbatches=1\nplace rank 0: a[0] b[0] b[1]\nrank 0: F0.0 B0.0\n");
  BOOST_TEST(contains(depth, "error: pipelines 'a' and 'b' have different numbers of stages (1 and 2)"), depth);
  auto empty = rejection("pipeline main stages=1 microbatches=1\nplace rank 0: main[0]\nplace rank 1:\nrank 0: F0.0 B0.0\nrank 1:\n");
  BOOST_TEST(contains(empty, "a.txt:5:1: error: rank 1 holds no chunk"), empty);
  auto range = rejection(std::string(placed_1x1) + "rank 0: F0.0 B0.0 F0.1\n");
  BOOST_TEST(contains(range, "a.txt:3:19: error: F0.1: microbatch 1 is out of range: pipeline 'main' carries microbatches 0..0"), range);
  auto chunk = rejection(std::string(placed_1x1) + "rank 0: F0.0 B0.0 F1.0\n");
  BOOST_TEST(contains(chunk, "a.txt:3:19: error: rank 0 has no chunk 1 (it holds 1 chunk)"), chunk);
  auto stage = rejection("pipeline main stages=1 microbatches=1\nplace rank 0: main[3]\nrank 0: F0.0 B0.0\n");
  BOOST_TEST(contains(stage, "error: rank 0 chunk 0 is placed on main[3], but pipeline 'main' has stages 0..0"), stage);

  // The language: a place block that places a stage twice and leaves one out.
  auto c = compile_text(
      "schedule s(ranks = 2, microbatches = 1) {\n  pipeline main stages = 2\n  place rank r { chunk 0 = main[0] }\n"
      "  rank r { F 0; B 0 }\n}\n");
  BOOST_TEST_REQUIRE(c.ok(), c.message());
  const std::string v = c.validation();
  BOOST_TEST(contains(v, "t.sched:4:3: error: stage main[0] is placed twice: on rank 0 and on rank 1"), v);
  BOOST_TEST(contains(v, "t.sched:1:1: error: stage main[1] is not placed on any rank"), v);
}

BOOST_AUTO_TEST_CASE(deadlock_names_the_wait_for_cycle_and_actions) {
  auto v = rejection("rank 0: F0.0 B0.0 F0.1 B0.1\nrank 1: F0.0 F0.1 B0.0 B0.1\n");
  BOOST_TEST(contains(v, "a.txt:1:14: error: the schedule deadlocks when sends and receives block as NCCL's do; "
                         "wait-for cycle: rank 0 -> rank 1 -> rank 0"),
             v);
  BOOST_TEST(contains(v, "a.txt:1:14: note: rank 0 cannot start B0.0: it waits for the gradient main[1]->main[0] of "
                         "microbatch 0, which rank 1 sends after B0.0"),
             v);
  BOOST_TEST(contains(v, "a.txt:2:14: note: rank 1 cannot start F0.1: it waits for the activation main[0]->main[1] of "
                         "microbatch 1, which rank 0 sends after F0.1"),
             v);

  // A rendezvous deadlock the dataflow alone does not show: rank 0 cannot finish a send.
  auto send = rejection(
      "pipeline a stages=2 microbatches=2\npipeline b stages=2 microbatches=2\nplace rank 0: a[0] b[1]\nplace rank 1: a[1] b[0]\n"
      "rank 0: F0.0 F0.1 F1.0+B0.0 B1.0 F1.1+B0.1 B1.1\nrank 1: F1.0 F0.0+B1.0 F1.1 B0.0 F0.1+B1.1 B0.1\n");
  BOOST_TEST(std::regex_search(send, std::regex("wait-for cycle: rank ([0-9]) -> rank ([0-9]) -> rank \\1")), send);
  BOOST_TEST(contains(send, "note: rank 0 cannot finish sending the activation a[0]->a[1] of microbatch 1 (after F0.1): rank 1 "
                            "posts that receive only when it starts F0.0+B1.0"),
             send);

  // Three ranks in a cycle, from the language.
  auto c = compile_text(
      "schedule s(ranks = 3, microbatches = 2) {\n  rank r {\n    if r == 1 { F 0; F 0; B 0; B 0 } else { F 0; B 0; F 0; B 0 }\n  }\n}\n");
  BOOST_TEST_REQUIRE(c.ok(), c.message());
  const std::string lv = c.validation();
  BOOST_TEST(std::regex_search(lv, std::regex("wait-for cycle: rank ([0-9])( -> rank [0-9])+ -> rank \\1")), lv);
  check_located(lv, "t.sched");
}

BOOST_AUTO_TEST_CASE(channel_order_and_local_order) {
  auto v = rejection("rank 0: F0.0 F0.1 B0.0 B0.1\nrank 1: F0.1 F0.0 B0.1 B0.0\n");
  BOOST_TEST(contains(v, "a.txt:2:9: error: rank 1 needs the activation main[0]->main[1] of microbatch 1 before the activation "
                         "main[0]->main[1] of microbatch 0, but rank 0 sends them the other way round; messages between two "
                         "stages arrive in order"),
             v);
  BOOST_TEST(contains(v, "a.txt:1:9: note: rank 0 sends the activation main[0]->main[1] of microbatch 0 after F0.0"), v);
  auto local = rejection("pipeline main stages=2 microbatches=1\nplace rank 0: main[0] main[1]\nrank 0: F1.0 F0.0 B1.0 B0.0\n");
  BOOST_TEST(contains(local, "a.txt:3:9: error: rank 0 runs F1.0 before the action on the same rank that produces its input"), local);
  BOOST_TEST(contains(local, "a.txt:3:14: note: the input comes from F0.0 here"), local);
}

BOOST_AUTO_TEST_CASE(action_text_and_csv_reader_errors) {
  auto bad = parse_text("rank 0: F0.0 X0.1\nrank 0: F0.0\nrank x\n");
  BOOST_TEST_REQUIRE(!bad.sched.has_value());
  const std::string m = bad.sched.error().message;
  BOOST_TEST(contains(m, "a.txt:1:14: error: expected an action F, B, I or W, found 'X'"), m);
  BOOST_TEST(contains(m, "a.txt:2:1: error: rank 0 is listed twice"), m);
  BOOST_TEST(contains(m, "a.txt:3:6: error: expected a rank number, found 'x'"), m);
  check_located(m, "a.txt");
  auto gap = parse_text("rank 1: F0.0 B0.0\n");
  BOOST_TEST(contains(gap.sched.error().message, "a.txt:1:1: error: rank 0 has no line (ranks are numbered from 0)"),
             gap.sched.error().message);
  auto none = parse_text("pipeline main stages=2 microbatches=1\nplace rank 0: main[0]\nplace rank 1: main[1]\n");
  BOOST_TEST(contains(none.sched.error().message, "no 'rank R: ...' line: the file holds no schedule"), none.sched.error().message);
  auto inference = parse_text("rank 0: F1.0 F0.0 F0.1 F1.1\nrank 1: F0.0 F1.0 F1.1 F0.1\n");
  BOOST_TEST_REQUIRE(!inference.sched.has_value());
  BOOST_TEST(contains(inference.sched.error().message,
                      "a.txt: no placement fits these actions (tried DualPipeV's V, DualPipe's two pipelines, interleaved)"),
             inference.sched.error().message);

  source_set src;
  auto csv = schedule::parse_pytorch_csv(src, src.add("p.csv", "0F0,0B0\n0F1,1F0\n1F0,1Z0\n"));
  BOOST_TEST_REQUIRE(!csv.has_value());
  BOOST_TEST(contains(csv.error().message, "p.csv:3:5: error: malformed action '1Z0': expected F, B, I or W after the stage index"),
             csv.error().message);
  auto twice = schedule::parse_pytorch_csv(src, src.add("q.csv", "0F0,0B0\n0F1,0B1\n"));
  BOOST_TEST_REQUIRE(!twice.has_value());
  BOOST_TEST(contains(twice.error().message, "q.csv:2:1: error: stage 0 appears on rank 0 and on rank 1"), twice.error().message);
  check_located(twice.error().message, "q.csv");
}

BOOST_AUTO_TEST_SUITE_END()

// ================================================================================================
BOOST_AUTO_TEST_SUITE(schedule_properties)

namespace {

using schedule::phase;

// The layouts the generator draws from: a plain pipeline, interleaving (stage c*R + r), DualPipeV's V
// (r and 2R-1-r) and DualPipe's two pipelines fed from both ends.
enum class layout { linear, interleaved, v, dual };

struct gen_step {
  int pipeline, stage, mb;
  phase kind;
  int rank, chunk;
  std::vector<int> deps;
  int input_from = -1;  // the step whose cross-stage output this consumes
};

struct generator {
  std::mt19937_64 rng;
  explicit generator(std::uint64_t seed) : rng(seed) {}
  int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }
  bool chance(double p) { return std::bernoulli_distribution(p)(rng); }

  layout last_layout = layout::linear;

  schedule::schedule skeleton() {
    schedule::schedule s;
    const int R = pick(1, 4), M = pick(1, 4);
    last_layout = static_cast<layout>(pick(0, 3));
    s.name = "gen";
    s.placement.assign(R, {});
    switch (last_layout) {
      case layout::linear:
        s.pipelines = {{"main", R, M}};
        for (int r = 0; r < R; ++r) s.placement[r] = {{0, r}};
        break;
      case layout::interleaved:
        s.pipelines = {{"main", 2 * R, M}};
        for (int r = 0; r < R; ++r) s.placement[r] = {{0, r}, {0, R + r}};
        break;
      case layout::v:
        s.pipelines = {{"main", 2 * R, M}};
        for (int r = 0; r < R; ++r) s.placement[r] = {{0, r}, {0, 2 * R - 1 - r}};
        break;
      case layout::dual:
        s.pipelines = {{"a", R, M}, {"b", R, M}};
        for (int r = 0; r < R; ++r) s.placement[r] = {{0, r}, {1, R - 1 - r}};
        break;
    }
    s.programs.assign(R, {});
    s.params = {{"ranks", R}, {"microbatches", s.total_microbatches()}};
    return s;
  }

  // A random order of the dataflow graph, per rank; with `fifo`, messages between two ranks are
  // consumed in the order they were sent. Returns false when the random walk got stuck.
  bool fill(schedule::schedule& s, bool forward_only, double split, bool fifo) {
    std::map<std::pair<int, int>, std::pair<int, int>> owner;  // (pipeline, stage) -> (rank, chunk)
    for (int r = 0; r < s.ranks(); ++r)
      for (int c = 0; c < s.chunks(r); ++c) owner[{s.placement[r][c].pipeline, s.placement[r][c].stage}] = {r, c};
    std::vector<gen_step> steps;
    std::map<std::tuple<int, int, int, int>, int> index;  // (kind, pipeline, stage, mb) -> step
    auto add = [&](int p, int st, int m, phase k) {
      auto [r, c] = owner.at({p, st});
      index[{static_cast<int>(k), p, st, m}] = static_cast<int>(steps.size());
      steps.push_back({p, st, m, k, r, c, {}, -1});
    };
    for (std::size_t p = 0; p < s.pipelines.size(); ++p)
      for (int st = 0; st < s.pipelines[p].stages; ++st)
        for (int m = 0; m < s.pipelines[p].microbatches; ++m) {
          add(static_cast<int>(p), st, m, phase::F);
          if (forward_only) continue;
          if (chance(split)) {
            add(static_cast<int>(p), st, m, phase::I);
            add(static_cast<int>(p), st, m, phase::W);
          } else {
            add(static_cast<int>(p), st, m, phase::B);
          }
        }
    auto find = [&](phase k, int p, int st, int m) -> int {
      auto it = index.find({static_cast<int>(k), p, st, m});
      return it == index.end() ? -1 : it->second;
    };
    auto backward = [&](int p, int st, int m) {
      int b = find(phase::B, p, st, m);
      return b >= 0 ? b : find(phase::I, p, st, m);
    };
    for (auto& g : steps) {
      const int S = s.pipelines[g.pipeline].stages;
      if (g.kind == phase::F && g.stage > 0) g.input_from = find(phase::F, g.pipeline, g.stage - 1, g.mb);
      if (g.kind == phase::B || g.kind == phase::I) {
        g.deps.push_back(find(phase::F, g.pipeline, g.stage, g.mb));
        if (g.stage + 1 < S) g.input_from = backward(g.pipeline, g.stage + 1, g.mb);
      }
      if (g.kind == phase::W) g.deps.push_back(find(phase::I, g.pipeline, g.stage, g.mb));
      if (g.input_from >= 0) g.deps.push_back(g.input_from);
    }
    // Channels: (src, dst, pipeline, gradient) -> consumers in the order their inputs were produced.
    std::map<std::tuple<int, int, int, bool>, std::deque<int>> channels;
    auto channel_of = [&](const gen_step& consumer) {
      const gen_step& from = steps[consumer.input_from];
      return std::tuple{from.rank, consumer.rank, consumer.pipeline, consumer.kind != phase::F};
    };
    std::vector<bool> done(steps.size(), false);
    for (std::size_t emitted = 0; emitted < steps.size(); ++emitted) {
      std::vector<int> ready;
      for (int i = 0; i < static_cast<int>(steps.size()); ++i) {
        if (done[i]) continue;
        const gen_step& g = steps[i];
        bool ok = std::all_of(g.deps.begin(), g.deps.end(), [&](int d) { return done[d]; });
        if (ok && fifo && g.input_from >= 0 && steps[g.input_from].rank != g.rank) ok = channels[channel_of(g)].front() == i;
        if (ok) ready.push_back(i);
      }
      if (ready.empty()) return false;
      const int i = ready[pick(0, static_cast<int>(ready.size()) - 1)];
      done[i] = true;
      const gen_step& g = steps[i];
      s.programs[g.rank].push_back({{g.kind, g.chunk, g.mb}, std::nullopt, {}});
      if (g.input_from >= 0 && steps[g.input_from].rank != g.rank) channels[channel_of(g)].pop_front();
      // Whoever consumes this step's output now has its message queued.
      for (int j = 0; j < static_cast<int>(steps.size()); ++j)
        if (steps[j].input_from == i && steps[j].rank != g.rank) channels[channel_of(steps[j])].push_back(j);
    }
    return true;
  }

  // Merges some single F with the next step of the same rank into an overlapped pair.
  void pair_up(schedule::schedule& s, double p) {
    for (auto& prog : s.programs) {
      std::vector<schedule::action> out;
      for (std::size_t i = 0; i < prog.size(); ++i) {
        if (i + 1 < prog.size() && !prog[i].second && !prog[i + 1].second && prog[i].first.kind == phase::F &&
            prog[i + 1].first.kind != phase::W && chance(p)) {
          out.push_back({prog[i].first, prog[i + 1].first, {}});
          ++i;
        } else {
          out.push_back(prog[i]);
        }
      }
      prog = std::move(out);
    }
  }

  // Swaps two actions of one rank (which may or may not break the schedule).
  bool swap_two(schedule::schedule& s) {
    std::vector<int> ranks;
    for (int r = 0; r < s.ranks(); ++r)
      if (s.programs[r].size() >= 2) ranks.push_back(r);
    if (ranks.empty()) return false;
    auto& prog = s.programs[ranks[pick(0, static_cast<int>(ranks.size()) - 1)]];
    int a = pick(0, static_cast<int>(prog.size()) - 1), b = pick(0, static_cast<int>(prog.size()) - 1);
    if (a == b) b = (a + 1) % static_cast<int>(prog.size());
    std::swap(prog[a], prog[b]);
    return true;
  }

  schedule::schedule random_valid_candidate(bool& forward_only) {
    for (;;) {
      schedule::schedule s = skeleton();
      forward_only = chance(0.15);
      if (!fill(s, forward_only, chance(0.5) ? 0.5 : 0.0, chance(0.85))) continue;
      if (chance(0.5)) pair_up(s, 0.3);
      return s;
    }
  }
};

// The action text of a schedule, through the text reader, so that its actions have locations.
struct located {
  std::unique_ptr<source_set> src = std::make_unique<source_set>();
  schedule::schedule sched;
};

located through_text(const schedule::schedule& s) {
  located l;
  const std::string text = schedule::format_actions(s, true);
  auto parsed = schedule::parse_actions(*l.src, l.src->add("gen.txt", text));
  BOOST_TEST_REQUIRE(parsed.has_value(), (parsed ? "" : parsed.error().message) << "\n" << text);
  l.sched = std::move(*parsed);
  return l;
}

bool valid(const schedule::schedule& s, const source_set& src, std::string* why = nullptr) {
  auto ok = schedule::validate(s, src);
  if (!ok && why) *why = ok.error().message;
  return ok.has_value();
}

void check_finishes_in_simulator(const schedule::schedule& s) {
  auto t = sim::simulate_actions(s, {});
  bool all = true;
  for (const auto& spans : t.spans)
    for (const auto& sp : spans) all = all && sp.end >= 0;
  BOOST_TEST(all, "a validated schedule stalls in the simulator:\n" << schedule::format_actions(s, true));
  BOOST_TEST(std::isfinite(t.makespan));
  BOOST_TEST(t.makespan > 0);
}

// The schedule in the language, with explicit indices: one branch per rank.
std::string to_language(const schedule::schedule& s) {
  std::string out = "schedule gen(ranks = " + std::to_string(s.ranks()) + ", microbatches = 1) {\n";
  for (const auto& p : s.pipelines)
    out += "  pipeline " + p.name + " stages = " + std::to_string(p.stages) + " microbatches = " +
           std::to_string(p.microbatches) + "\n";
  auto branches = [&](auto&& body) {
    std::string text;
    for (int r = 0; r < s.ranks(); ++r)
      text += std::string(r == 0 ? "    if" : " else if") + " r == " + std::to_string(r) + " {" + body(r) + " }";
    return text + "\n";
  };
  out += "  place rank r {\n" + branches([&](int r) {
           std::string t;
           for (std::size_t c = 0; c < s.placement[r].size(); ++c)
             t += " chunk " + std::to_string(c) + " = " + s.pipelines[s.placement[r][c].pipeline].name + "[" +
                  std::to_string(s.placement[r][c].stage) + "];";
           return t;
         }) +
         "  }\n";
  auto step_text = [](const schedule::step& st) {
    return std::string(1, schedule::to_char(st.kind)) + " " + std::to_string(st.chunk) + "." + std::to_string(st.microbatch);
  };
  out += "  rank r {\n" + branches([&](int r) {
           std::string t;
           for (const auto& a : s.programs[r])
             t += " " + step_text(a.first) + (a.second ? " & " + step_text(*a.second) : "") + ";";
           return t;
         }) +
         "  }\n}\n";
  return out;
}

bool same_programs(const schedule::schedule& a, const schedule::schedule& b) {
  if (a.ranks() != b.ranks()) return false;
  for (int r = 0; r < a.ranks(); ++r) {
    if (a.programs[r].size() != b.programs[r].size()) return false;
    for (std::size_t i = 0; i < a.programs[r].size(); ++i) {
      const auto& x = a.programs[r][i];
      const auto& y = b.programs[r][i];
      if (!(x.first == y.first) || x.second.has_value() != y.second.has_value()) return false;
      if (x.second && !(*x.second == *y.second)) return false;
    }
  }
  return true;
}

constexpr int cases = 300;

}  // namespace

// Whatever validate() accepts, the action-level simulator runs to the end: random dataflow orders,
// some merged into pairs, some with two actions swapped (which can create real deadlocks).
BOOST_AUTO_TEST_CASE(validated_schedules_never_deadlock_in_the_simulator) {
  generator g(20240611);
  int accepted = 0, rejected = 0;
  for (int k = 0; k < cases * 2; ++k) {
    bool forward_only = false;
    schedule::schedule s = g.random_valid_candidate(forward_only);
    if (g.chance(0.35)) g.swap_two(s);
    located l = through_text(s);
    std::string why;
    if (!valid(l.sched, *l.src, &why)) {
      ++rejected;
      check_located(why, "gen.txt");
      continue;
    }
    ++accepted;
    check_finishes_in_simulator(l.sched);
  }
  BOOST_TEST_MESSAGE("validated " << accepted << ", rejected " << rejected);
  BOOST_TEST(accepted >= cases / 3);
  BOOST_TEST(rejected >= cases / 10);
}

// Dropping or duplicating an action always breaks a schedule; swapping may. Every rejection is
// located in the text (file:line:col with line > 0, the source line and a caret).
BOOST_AUTO_TEST_CASE(rejections_of_mutated_schedules_are_located) {
  generator g(77);
  int checked = 0;
  for (int k = 0; k < cases; ++k) {
    bool forward_only = false;
    schedule::schedule base = g.random_valid_candidate(forward_only);
    if (!valid(base, source_set{})) continue;
    schedule::schedule m = base;
    const int kind = g.pick(0, 2);
    std::vector<int> ranks;
    for (int r = 0; r < m.ranks(); ++r)
      if (!m.programs[r].empty()) ranks.push_back(r);
    auto& prog = m.programs[ranks[g.pick(0, static_cast<int>(ranks.size()) - 1)]];
    const int at = g.pick(0, static_cast<int>(prog.size()) - 1);
    if (kind == 0) prog.erase(prog.begin() + at);
    else if (kind == 1) prog.insert(prog.begin() + g.pick(0, static_cast<int>(prog.size())), prog[at]);
    else g.swap_two(m);
    located l = through_text(m);
    std::string why;
    const bool ok = valid(l.sched, *l.src, &why);
    BOOST_TEST_CONTEXT("mutation " << kind << ":\n" << schedule::format_actions(m, true)) {
      // (Dropping a schedule's only backward leaves a forward-only schedule, which is valid.)
      if (kind != 2 && !(kind == 0 && m.forward_only() && !base.forward_only()))
        BOOST_TEST(!ok, "a dropped or duplicated action was accepted");
      if (ok) check_finishes_in_simulator(l.sched);
      else check_located(why, "gen.txt");
    }
    ++checked;
  }
  BOOST_TEST(checked >= cases / 2);
}

// text -> IR -> text is the identity, with and without placement lines; the language with explicit
// indices compiles to the same actions; single-pipeline schedules survive PyTorch's CSV.
BOOST_AUTO_TEST_CASE(text_and_csv_round_trips) {
  generator g(4242);
  int valid_count = 0, csv_count = 0;
  for (int k = 0; k < cases; ++k) {
    bool forward_only = false;
    schedule::schedule s = g.random_valid_candidate(forward_only);
    const layout lay = g.last_layout;
    const std::string placed = schedule::format_actions(s, true);
    located l = through_text(s);
    BOOST_TEST(schedule::format_actions(l.sched, true) == placed);
    BOOST_TEST(same_programs(l.sched, s));
    BOOST_TEST((l.sched.placement == s.placement));
    if (!valid(l.sched, *l.src)) continue;
    ++valid_count;

    // Without placement lines the reader infers a placement under which the schedule is valid.
    const std::string bare = schedule::format_actions(s);
    source_set src;
    auto inferred = schedule::parse_actions(src, src.add("bare.txt", bare));
    BOOST_TEST_REQUIRE(inferred.has_value(), (inferred ? "" : inferred.error().message) << "\n" << placed);
    BOOST_TEST(schedule::format_actions(*inferred) == bare);
    BOOST_TEST(valid(*inferred, src));
    if (lay == layout::linear) BOOST_TEST((inferred->placement == s.placement));

    // The language, explicit indices.
    auto c = compile_text(to_language(s));
    BOOST_TEST_REQUIRE(c.ok(), c.message() << "\n" << to_language(s));
    BOOST_TEST(c.actions() == bare);
    BOOST_TEST((c.sched->placement == s.placement));

    if (s.pipelines.size() == 1) {
      ++csv_count;
      const std::string csv = schedule::format_pytorch_csv(s);
      source_set csrc;
      auto back = schedule::parse_pytorch_csv(csrc, csrc.add("gen.csv", csv));
      BOOST_TEST_REQUIRE(back.has_value(), (back ? "" : back.error().message) << "\n" << csv);
      BOOST_TEST(schedule::format_pytorch_csv(*back) == csv);
      BOOST_TEST((back->placement == s.placement));
      BOOST_TEST(same_programs(*back, s));
      BOOST_TEST(back->pipelines[0].stages == s.pipelines[0].stages);
      BOOST_TEST(back->pipelines[0].microbatches == s.pipelines[0].microbatches);
      BOOST_TEST(valid(*back, csrc));
    }
  }
  BOOST_TEST(valid_count >= cases / 3);
  BOOST_TEST(csv_count >= cases / 5);
}

BOOST_AUTO_TEST_SUITE_END()
