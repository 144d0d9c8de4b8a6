// The report and interop pieces: the SVG pipeline picture, the Chrome trace, and PyTorch's
// compute-only schedule CSV (round trips of the shared cases, exact export, located import errors).
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "runtime/report/chrome_trace.hpp"
#include "runtime/report/timeline.hpp"
#include "runtime/report/timeline_svg.hpp"
#include "runtime/schedule/action_text.hpp"
#include "runtime/schedule/pytorch_csv.hpp"
#include "runtime/schedule/validate.hpp"
#include "runtime/sim/action_sim.hpp"

namespace fs = std::filesystem;
using namespace loom;

namespace {

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

fs::path cases() { return fs::path(LOOM_SHARED_CASES); }

schedule::schedule parse_text(const std::string& text, source_set& src) {
  auto s = schedule::parse_actions(src, src.add("case.txt", text));
  BOOST_TEST_REQUIRE(s.has_value(), (s ? "" : s.error().message));
  return std::move(*s);
}

schedule::schedule load_case(const std::string& name, source_set& src) {
  auto id = src.load((cases() / "schedules" / name).string(), 1 << 20);
  BOOST_TEST_REQUIRE(id.has_value(), (id ? "" : id.error().message));
  auto s = schedule::parse_actions(src, *id);
  BOOST_TEST_REQUIRE(s.has_value(), (s ? "" : s.error().message));
  return std::move(*s);
}

report::timeline simulated(const schedule::schedule& s, const source_set& src, const sim::action_costs& costs,
                           std::string title) {
  auto ok = schedule::validate(s, src);
  BOOST_TEST_REQUIRE(ok.has_value(), (ok ? "" : ok.error().message));
  auto spans = sim::simulate_actions(s, costs);
  return report::make_timeline(s, spans.spans, std::move(title), "units");
}

report::timeline case_timeline(const std::string& name, const sim::action_costs& costs = {}) {
  source_set src;
  auto s = load_case(name, src);
  return simulated(s, src, costs, name);
}

// 1F1B on `ranks` ranks with `mbs` microbatches, in action text.
std::string one_f_one_b(int ranks, int mbs) {
  std::string text;
  for (int r = 0; r < ranks; ++r) {
    const int warm = std::min(ranks - r - 1, mbs);
    int f = 0, b = 0;
    text += "rank " + std::to_string(r) + ":";
    auto F = [&] { text += " F0." + std::to_string(f++); };
    auto B = [&] { text += " B0." + std::to_string(b++); };
    for (int i = 0; i < warm; ++i) F();
    for (int i = 0; i < mbs - warm; ++i) F(), B();
    for (int i = 0; i < warm; ++i) B();
    text += "\n";
  }
  return text;
}

// A minimal XML well-formedness checker: one root, balanced tags, quoted attributes, known
// entities, no stray '<' or '&'. Counts elements by name and by class attribute.
struct xml_summary {
  bool ok = false;
  std::string why;
  std::string root;
  std::map<std::string, int> elements;
  std::map<std::string, int> classes;  // by the first word of class
  std::map<std::string, std::string> root_attrs;
};

bool check_text(std::string_view text, std::string& why) {
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '<') return why = "stray '<'", false;
    if (text[i] != '&') continue;
    const std::size_t semi = text.find(';', i);
    if (semi == std::string_view::npos) return why = "unterminated entity", false;
    const std::string_view name = text.substr(i + 1, semi - i - 1);
    if (name != "amp" && name != "lt" && name != "gt" && name != "quot" && name != "apos")
      return why = "unknown entity &" + std::string(name) + ";", false;
  }
  return true;
}

xml_summary check_xml(const std::string& doc) {
  xml_summary out;
  std::vector<std::string> stack;
  std::size_t i = 0;
  if (doc.rfind("<?xml", 0) == 0) i = doc.find("?>") + 2;
  int roots = 0;
  while (i < doc.size()) {
    const std::size_t lt = doc.find('<', i);
    if (!check_text(std::string_view(doc).substr(i, (lt == std::string::npos ? doc.size() : lt) - i), out.why))
      return out;
    if (lt == std::string::npos) break;
    if (stack.empty() && doc.find_first_not_of(" \n\r\t", i) < lt) return out.why = "text outside the root", out;
    const std::size_t gt = doc.find('>', lt);
    if (gt == std::string::npos) return out.why = "unterminated tag", out;
    std::string tag = doc.substr(lt + 1, gt - lt - 1);
    i = gt + 1;
    if (tag.starts_with("/")) {
      if (stack.empty() || stack.back() != tag.substr(1)) return out.why = "mismatched </" + tag.substr(1) + ">", out;
      stack.pop_back();
      continue;
    }
    const bool empty = tag.ends_with("/");
    if (empty) tag.pop_back();
    const std::size_t name_end = std::min(tag.find(' '), tag.size());
    const std::string name = tag.substr(0, name_end);
    if (name.empty() || !std::isalpha(static_cast<unsigned char>(name[0]))) return out.why = "bad tag name", out;
    std::map<std::string, std::string> attrs;
    std::size_t p = name_end;
    while (true) {
      p = tag.find_first_not_of(' ', p);
      if (p == std::string::npos) break;
      const std::size_t eq = tag.find('=', p);
      if (eq == std::string::npos || eq + 1 >= tag.size() || tag[eq + 1] != '"') return out.why = "bad attribute in <" + name, out;
      const std::size_t close = tag.find('"', eq + 2);
      if (close == std::string::npos) return out.why = "unterminated attribute", out;
      const std::string key = tag.substr(p, eq - p), value = tag.substr(eq + 2, close - eq - 2);
      if (attrs.count(key)) return out.why = "duplicate attribute " + key, out;
      if (!check_text(value, out.why)) return out;
      attrs[key] = value;
      p = close + 1;
    }
    if (stack.empty()) {
      ++roots;
      out.root = name;
      out.root_attrs = attrs;
    }
    ++out.elements[name];
    if (attrs.count("class")) ++out.classes[attrs["class"].substr(0, attrs["class"].find(' '))];
    if (!empty) stack.push_back(name);
  }
  if (!stack.empty()) return out.why = "unclosed <" + stack.back() + ">", out;
  if (roots != 1) return out.why = "expected one root element", out;
  out.ok = true;
  return out;
}

// The text between <g class="ev"> and its </g>, one entry per event.
std::vector<std::string> event_groups(const std::string& svg) {
  std::vector<std::string> groups;
  for (std::size_t at = svg.find("<g class=\"ev\">"); at != std::string::npos;
       at = svg.find("<g class=\"ev\">", at + 1))
    groups.push_back(svg.substr(at, svg.find("</g>", at) - at));
  return groups;
}

std::size_t count(const std::string& haystack, const std::string& needle) {
  std::size_t n = 0;
  for (std::size_t at = haystack.find(needle); at != std::string::npos; at = haystack.find(needle, at + 1)) ++n;
  return n;
}

const sim::action_costs fb2{1, 2, 1, 2};

}  // namespace

BOOST_AUTO_TEST_SUITE(timeline_svg)

BOOST_AUTO_TEST_CASE(dualpipe_picture_is_well_formed_with_a_cell_per_event) {
  auto t = case_timeline("dualpipe-r8-m20.txt", fb2);
  t.title = "DualPipe, 8 ranks, 20 microbatches (predicted, F&B = 2)";
  const std::string svg = report::render_svg(t);
  auto x = check_xml(svg);
  BOOST_TEST_REQUIRE(x.ok, x.why);
  BOOST_TEST(x.root == "svg");
  BOOST_TEST(x.root_attrs["xmlns"] == "http://www.w3.org/2000/svg");
  BOOST_TEST(x.root_attrs["version"] == "1.1");
  BOOST_TEST(svg.find("href") == std::string::npos);  // no external resources

  const auto groups = event_groups(svg);
  BOOST_TEST_REQUIRE(groups.size() == t.events.size());
  std::size_t pairs = 0;
  for (const auto& e : t.events) pairs += e.action.is_pair();
  BOOST_TEST(pairs > 0u);
  BOOST_TEST(static_cast<std::size_t>(x.classes["pair"]) == pairs);
  std::size_t framed = 0;
  for (const auto& g : groups) {
    const std::size_t rects = count(g, "<rect");
    const bool pair = g.find("class=\"pair\"") != std::string::npos;
    framed += pair;
    BOOST_TEST(rects == (pair ? 3u : 1u));  // two halves and the frame, or one cell
  }
  BOOST_TEST(framed == pairs);
  for (int r = 0; r < 8; ++r) BOOST_TEST(svg.find(">Device " + std::to_string(r) + "<") != std::string::npos);
  for (const char* label : {"Forward", "Backward", "dark: pipeline a \u00b7 light: pipeline b", "Backward for inputs",
                            "Backward for weights", "Overlapped pair", "Idle", "time (units)"})
    BOOST_TEST(svg.find(label) != std::string::npos, label);

  // Kept for a look at the picture: rsvg-convert build*/report_test/dualpipe-r8-m20.svg -o x.png
  fs::create_directories(fs::path(LOOM_BINARY_DIR) / "report_test");
  std::ofstream(fs::path(LOOM_BINARY_DIR) / "report_test" / "dualpipe-r8-m20.svg") << svg;
}

BOOST_AUTO_TEST_CASE(output_is_deterministic_and_independent_of_event_order) {
  auto t = case_timeline("dualpipev-r4-m10.txt");
  const std::string a = report::render_svg(t), b = report::render_svg(t);
  BOOST_TEST(a == b);
  std::mt19937 rng(7);
  std::shuffle(t.events.begin(), t.events.end(), rng);
  BOOST_TEST(report::render_svg(t) == a);
}

BOOST_AUTO_TEST_CASE(odd_titles_and_units_are_escaped) {
  auto t = case_timeline("1f1b-r4-m8.txt");
  t.title = "a<b & \"c\" 'd' </svg> \x01 bad\xff utf8 \xc3\xa9";
  t.unit = "m<s>";
  const std::string svg = report::render_svg(t);
  auto x = check_xml(svg);
  BOOST_TEST_REQUIRE(x.ok, x.why);
  BOOST_TEST(svg.find("a&lt;b &amp; &quot;c&quot; &apos;d&apos; &lt;/svg&gt; ? bad? utf8 \xc3\xa9") !=
             std::string::npos);
  BOOST_TEST(svg.find("time (m&lt;s&gt;)") != std::string::npos);
  BOOST_TEST(report::xml_escape("\xed\xa0\x80x") == "???x");  // a UTF-16 surrogate is not a character
}

BOOST_AUTO_TEST_CASE(large_timeline_stays_readable_and_small) {
  source_set src;
  auto s = parse_text(one_f_one_b(64, 32), src);
  auto t = simulated(s, src, {}, "1F1B, 64 ranks, 32 microbatches");
  BOOST_TEST_REQUIRE(t.events.size() == 64u * 64u);
  const std::string svg = report::render_svg(t);
  auto x = check_xml(svg);
  BOOST_TEST_REQUIRE(x.ok, x.why);
  BOOST_TEST(event_groups(svg).size() == t.events.size());
  BOOST_TEST(svg.size() < 2'500'000u);
  const double width = std::stod(x.root_attrs["width"]), height = std::stod(x.root_attrs["height"]);
  BOOST_TEST(width <= 2600.0);
  BOOST_TEST(height <= 1400.0);
  BOOST_TEST(svg.find(">Device 63<") != std::string::npos);

  // A narrow picture omits the numbers that no longer fit, instead of overflowing the cells.
  const std::size_t numbers = count(svg, "class=\"n\"");
  report::svg_options narrow;
  narrow.width = 300;
  const std::string small = report::render_svg(t, narrow);
  BOOST_TEST(check_xml(small).ok);
  BOOST_TEST(count(small, "class=\"n\"") < numbers / 4);
  report::svg_options bare;
  bare.numbers = false;
  bare.tooltips = false;
  BOOST_TEST(count(report::render_svg(t, bare), "class=\"n\"") == 0u);
}

BOOST_AUTO_TEST_CASE(expert_parallel_rows_and_component_streams) {
  auto t = case_timeline("1f1b-r4-m8.txt");
  t.ep = 2;
  const std::string plain = report::render_svg(t);  // every event on ep 0: one row per rank
  BOOST_TEST(plain.find(">Device 3<") != std::string::npos);
  BOOST_TEST(plain.find("/ ep") == std::string::npos);

  auto copies = t.events;
  for (auto& e : copies) {
    e.ep = 1;
    e.components = {{e.start, (e.start + e.end) / 2, "f.attn", false, 0},
                    {(e.start + e.end) / 2, e.end, "f.dispatch", true, 0}};
  }
  t.events.insert(t.events.end(), copies.begin(), copies.end());
  report::svg_options opt;
  opt.components = true;
  const std::string svg = report::render_svg(t, opt);
  auto x = check_xml(svg);
  BOOST_TEST_REQUIRE(x.ok, x.why);
  BOOST_TEST(svg.find(">Rank 3 / ep 1<") != std::string::npos);
  BOOST_TEST(svg.find(">Rank 0 / ep 0<") != std::string::npos);
  BOOST_TEST(static_cast<std::size_t>(x.classes["cp"]) == 2 * copies.size());
  BOOST_TEST(svg.find(">compute<") != std::string::npos);
  BOOST_TEST(svg.find(">comm<") != std::string::npos);
  BOOST_TEST(svg.find(">f.attn<") != std::string::npos);  // in the legend
  BOOST_TEST(check_xml(report::render_svg(t)).classes["cp"] == 0);  // only when asked for
}

BOOST_AUTO_TEST_CASE(empty_timeline_still_renders) {
  report::timeline t;
  t.title = "nothing";
  auto x = check_xml(report::render_svg(t));
  BOOST_TEST(x.ok, x.why);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(chrome_trace)

BOOST_AUTO_TEST_CASE(one_complete_event_per_action_with_its_token_and_args) {
  source_set src;
  auto s = load_case("dualpipe-r4-m8.txt", src);
  auto t = simulated(s, src, {}, "dualpipe");
  const auto j = report::chrome_trace(t, 1000);
  BOOST_TEST(j["displayTimeUnit"] == "ms");
  const auto& events = j["traceEvents"];
  BOOST_TEST_REQUIRE(events.is_array());

  std::map<std::pair<int, double>, nlohmann::json> actions;  // (pid, ts) -> event
  std::map<int, std::string> process_names;
  std::map<std::pair<int, int>, std::string> thread_names;
  for (const auto& e : events) {
    if (e["ph"] == "M" && e["name"] == "process_name") process_names[e["pid"].get<int>()] = e["args"]["name"];
    if (e["ph"] == "M" && e["name"] == "thread_name") thread_names[{e["pid"].get<int>(), e["tid"].get<int>()}] = e["args"]["name"];
    if (e["ph"] != "X") continue;
    BOOST_TEST(e["tid"] == 0);
    actions[{e["pid"].get<int>(), e["ts"].get<double>()}] = e;
  }
  BOOST_TEST_REQUIRE(actions.size() == t.events.size());
  for (int r = 0; r < 4; ++r) {
    BOOST_TEST(process_names[r] == "rank " + std::to_string(r));
    BOOST_TEST(thread_names[std::make_pair(r, 0)] == "actions");
  }
  BOOST_TEST(!thread_names.count(std::make_pair(0, 1)));  // no component spans, no stream threads

  int pairs = 0;
  for (const auto& ev : t.events) {
    const auto& e = actions.at({ev.rank, ev.start * 1000});
    BOOST_TEST(e["name"] == schedule::to_string(ev.action));
    BOOST_TEST(e["dur"].get<double>() == (ev.end - ev.start) * 1000);
    BOOST_TEST(e["args"]["rank"] == ev.rank);
    BOOST_TEST(e["args"]["ep"] == 0);
    BOOST_TEST(e["args"]["microbatch"] == ev.action.first.microbatch);
    BOOST_TEST(e["args"]["chunk"] == ev.action.first.chunk);
    BOOST_TEST(e["args"]["stage"] == ev.stage_first);
    BOOST_TEST(e["args"]["pipeline"] == (ev.pipeline_first == 0 ? "a" : "b"));
    if (ev.action.second) {
      ++pairs;
      BOOST_TEST(e["cat"] == std::string("F&") + schedule::to_char(ev.action.second->kind));
      BOOST_TEST(e["args"]["microbatch2"] == ev.action.second->microbatch);
      BOOST_TEST(e["args"]["chunk2"] == ev.action.second->chunk);
    } else {
      BOOST_TEST(e["cat"] == std::string(1, schedule::to_char(ev.action.first.kind)));
      BOOST_TEST(!e["args"].contains("microbatch2"));
    }
  }
  BOOST_TEST(pairs > 0);
}

BOOST_AUTO_TEST_CASE(component_spans_go_to_the_stream_threads) {
  auto t = case_timeline("1f1b-r4-m8.txt");
  auto& e = t.events.front();
  e.components = {{e.start, e.start + 0.25, "f.attn", false, 0},
                  {e.start + 0.25, e.start + 0.5, "f.dispatch", true, 0},
                  {e.start + 0.5, e.end, "f.mlp", false, 1}};
  const auto j = report::chrome_trace(t, 1);
  int compute = 0, comm = 0;
  std::map<std::pair<int, int>, std::string> thread_names;
  for (const auto& ev : j["traceEvents"]) {
    if (ev["ph"] == "M" && ev["name"] == "thread_name") thread_names[{ev["pid"].get<int>(), ev["tid"].get<int>()}] = ev["args"]["name"];
    if (ev["ph"] != "X" || ev["tid"] == 0) continue;
    (ev["tid"] == 1 ? compute : comm)++;
    BOOST_TEST(ev["pid"] == e.rank);
    BOOST_TEST(ev["args"]["action"] == schedule::to_string(e.action));
    BOOST_TEST(ev["args"]["component"] == ev["name"]);
    if (ev["name"] == "f.dispatch") BOOST_TEST(ev["tid"] == 2);
    if (ev["name"] == "f.mlp") BOOST_TEST(ev["args"]["layer"] == 1);
  }
  BOOST_TEST(compute == 2);
  BOOST_TEST(comm == 1);
  BOOST_TEST(thread_names[std::make_pair(0, 1)] == "compute");
  BOOST_TEST(thread_names[std::make_pair(0, 2)] == "comm");
}

BOOST_AUTO_TEST_CASE(events_are_sorted_by_pid_tid_ts) {
  auto t = case_timeline("zb-h1-r4-m8.txt");
  std::mt19937 rng(3);
  std::shuffle(t.events.begin(), t.events.end(), rng);
  t.events.front().components = {{t.events.front().start, t.events.front().end, "b.combine", true, 0}};
  const auto j = report::chrome_trace(t, 10);
  const auto& events = j["traceEvents"];
  for (std::size_t i = 1; i < events.size(); ++i) {
    const auto& a = events[i - 1];
    const auto& b = events[i];
    auto key = [](const nlohmann::json& e) {
      return std::make_tuple(e["pid"].get<int>(), e["tid"].get<int>(), e["ph"] == "X",
                             e.contains("ts") ? e["ts"].get<double>() : 0.0);
    };
    BOOST_TEST((key(a) <= key(b)), "event " << i << " out of order");
  }
}

BOOST_AUTO_TEST_CASE(expert_parallel_members_are_processes) {
  auto t = case_timeline("gpipe-r4-m8.txt");
  t.ep = 2;
  auto copies = t.events;
  for (auto& e : copies) e.ep = 1;
  t.events.insert(t.events.end(), copies.begin(), copies.end());
  const auto j = report::chrome_trace(t, 1);
  std::map<int, std::string> names;
  int x = 0;
  for (const auto& e : j["traceEvents"]) {
    if (e["name"] == "process_name") names[e["pid"].get<int>()] = e["args"]["name"];
    if (e["ph"] == "X") {
      ++x;
      BOOST_TEST(e["pid"] == e["args"]["rank"].get<int>() * 2 + e["args"]["ep"].get<int>());
    }
  }
  BOOST_TEST(x == static_cast<int>(t.events.size()));
  BOOST_TEST(names.size() == 8u);
  BOOST_TEST(names[7] == "rank 3 ep 1");
  BOOST_TEST(names[2] == "rank 1 ep 0");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(pytorch_csv)

BOOST_AUTO_TEST_CASE(shared_single_pipeline_cases_round_trip) {
  std::vector<std::string> covered;
  for (const auto& entry : fs::directory_iterator(cases() / "schedules")) {
    const std::string name = entry.path().filename().string();
    BOOST_TEST_CONTEXT(name) {
      source_set src;
      auto s = load_case(name, src);
      if (s.pipelines.size() != 1) continue;
      const std::string csv = schedule::format_pytorch_csv(s);
      auto back = schedule::parse_pytorch_csv(src, src.add(name + ".csv", csv));
      BOOST_TEST_REQUIRE(back.has_value(), (back ? "" : back.error().message));
      BOOST_TEST(schedule::format_actions(*back) == read(entry.path()));
      BOOST_TEST(schedule::format_actions(*back, true) == schedule::format_actions(s, true));
      auto ok = schedule::validate(*back, src);
      BOOST_TEST(ok.has_value(), (ok ? "" : ok.error().message));
      covered.push_back(name.substr(0, name.find("-r")));
    }
  }
  for (const char* want : {"1f1b", "gpipe", "zb-h1", "dualpipev"})
    BOOST_TEST(std::count(covered.begin(), covered.end(), want) >= 1, want);
}

BOOST_AUTO_TEST_CASE(two_pipelines_round_trip_with_their_placement) {
  source_set src;
  auto s = load_case("dualpipe-r4-m8.txt", src);
  BOOST_TEST_REQUIRE(s.pipelines.size() == 2u);
  const std::string csv = schedule::format_pytorch_csv(s);
  // Rank 0 holds a[0] and b[3]: global stages 0 and 1 * 4 + 3 = 7.
  BOOST_TEST(csv.rfind("0F0,0F1,", 0) == 0);
  BOOST_TEST(csv.find("(0F") != std::string::npos);
  BOOST_TEST(csv.substr(0, csv.find('\n')).find("7F0") != std::string::npos);
  schedule::csv_import_options opt;
  opt.pipelines = s.pipelines;
  for (auto& p : opt.pipelines) p.microbatches = 0;  // inferred from the file
  opt.placement = s.placement;
  auto back = schedule::parse_pytorch_csv(src, src.add("dualpipe.csv", csv), opt);
  BOOST_TEST_REQUIRE(back.has_value(), (back ? "" : back.error().message));
  BOOST_TEST(schedule::format_actions(*back, true) == schedule::format_actions(s, true));
}

BOOST_AUTO_TEST_CASE(export_of_a_hand_written_case_is_exact) {
  source_set src;
  auto s = parse_text(
      "pipeline main stages=4 microbatches=2\n"
      "place rank 0: main[0] main[3]\n"
      "place rank 1: main[1] main[2]\n"
      "rank 0: F0.0 F0.1 F1.0 I1.0 F1.1+B0.0 W1.0 B1.1 B0.1\n"
      "rank 1: F0.0 F1.0 F0.1 F1.1+I1.0 B0.0 I1.1 B0.1 W1.0 W1.1\n",
      src);
  const std::string csv = schedule::format_pytorch_csv(s);
  BOOST_TEST(csv ==
             "0F0,0F1,3F0,3I0,(3F1;0B0)OVERLAP_F_B,3W0,3B1,0B1\n"
             "1F0,2F0,1F1,(2F1;2I0)OVERLAP_F_B,1B0,2I1,1B1,2W0,2W1\n");
  auto back = schedule::parse_pytorch_csv(src, src.add("v.csv", csv));
  BOOST_TEST_REQUIRE(back.has_value(), (back ? "" : back.error().message));
  BOOST_TEST(schedule::format_actions(*back, true) == schedule::format_actions(s, true));
  BOOST_TEST(back->name == "pytorch_csv");
  BOOST_TEST(back->params.at("microbatches") == 2);
}

BOOST_AUTO_TEST_CASE(pytorch_written_files_import) {
  // As PyTorch's csv.writer writes them: CRLF, empty cells for idle steps; spaces and quotes too.
  source_set src;
  const std::string text =
      "0F0,0F1,,(0B0;0F2)OVERLAP_F_B,0B1,0B2\r\n"
      ",1F0, 1F1 ,\"1B0\",1F2,1B1,1B2\r\n";
  auto s = schedule::parse_pytorch_csv(src, src.add("pt.csv", text));
  BOOST_TEST_REQUIRE(s.has_value(), (s ? "" : s.error().message));
  BOOST_TEST(schedule::format_actions(*s, true) ==
             "pipeline main stages=2 microbatches=3\n"
             "place rank 0: main[0]\n"
             "place rank 1: main[1]\n"
             "rank 0: F0.0 F0.1 F0.2+B0.0 B0.1 B0.2\n"
             "rank 1: F0.0 F0.1 B0.0 F0.2 B0.1 B0.2\n");
  BOOST_TEST(s->programs[1][2].where.col == 12u);  // the quoted cell, at its quote
}

// The first line of the error, which carries file:line:col.
std::string first_line(const std::string& csv, const schedule::csv_import_options& opt = {}) {
  source_set src;
  auto s = schedule::parse_pytorch_csv(src, src.add("bad.csv", csv), opt);
  BOOST_TEST_REQUIRE(!s.has_value());
  return s.error().message.substr(0, s.error().message.find('\n'));
}

BOOST_AUTO_TEST_CASE(malformed_input_errors_are_located) {
  BOOST_TEST(first_line("0F0,0X1\n") ==
             "bad.csv:1:5: error: malformed action '0X1': expected F, B, I or W after the stage index");
  BOOST_TEST(first_line("0F0\n1F0,  1Fx\n") ==
             "bad.csv:2:7: error: malformed action '1Fx': expected a microbatch number after the kind, as in 0F1");
  BOOST_TEST(first_line("F0\n").starts_with("bad.csv:1:1: error: malformed action 'F0': expected a stage index"));
  BOOST_TEST(first_line("0F0,1F0,0F1x\n").starts_with("bad.csv:1:9: error: malformed action '0F1x': unexpected text"));
  BOOST_TEST(first_line("0F0,(0B1;1W2)OVERLAP_F_B\n")
                 .starts_with("bad.csv:1:5: error: malformed action '(0B1;1W2)OVERLAP_F_B': a pair overlaps"));
  BOOST_TEST(first_line("(0F1;1B2)OVERLAP\n").starts_with("bad.csv:1:1: error: malformed action"));
  BOOST_TEST(first_line("(0F1;1B2;2B2)OVERLAP_F_B\n").find("exactly two actions") != std::string::npos);
  BOOST_TEST(first_line("0F99999999999\n").find("1:1: error: malformed action '0F99999999999': the microbatch is over") !=
             std::string::npos);
  BOOST_TEST(first_line("0F0,1F0\n1F0,1B0\n") ==
             "bad.csv:2:1: error: stage 1 appears on rank 0 and on rank 1: each stage lives on one rank (pass a "
             "placement to import this)");
  BOOST_TEST(first_line("0F0\n2F0\n") ==
             "bad.csv:1:1: error: no rank runs stage 1: stages must be numbered 0 to 2 without gaps");
  BOOST_TEST(first_line("").find("no row") != std::string::npos);
  BOOST_TEST(first_line(",,\n").find("holds no action") != std::string::npos);
  BOOST_TEST(first_line("0F0,0SEND_F0\n").starts_with("bad.csv:1:5: error: '0SEND_F0' is a communication"));

  schedule::csv_import_options opt;
  opt.pipelines = {{"main", 2, 1}};
  opt.placement = {{{0, 0}}, {{0, 1}}};
  BOOST_TEST(first_line("0F0,1F0\n1F0\n", opt) ==
             "bad.csv:1:5: error: stage 1 belongs to rank 1 in the given placement, not to rank 0");
  BOOST_TEST(first_line("0F0\n1F0,1F1\n", opt) ==
             "bad.csv:2:5: error: microbatch 1 is out of range: pipeline 'main' carries 1");
  BOOST_TEST(first_line("0F0\n5F0\n", opt) == "bad.csv:2:1: error: stage 5 is not in the given placement");
  BOOST_TEST(first_line("0F0\n", opt).find("the file has 1 rows") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(errors_show_the_line_and_a_note) {
  source_set src;
  auto s = schedule::parse_pytorch_csv(src, src.add("dup.csv", "0F0,1F0\n1F0,1B0\n"));
  BOOST_TEST_REQUIRE(!s.has_value());
  BOOST_TEST((s.error().code == errc::parse_error));
  BOOST_TEST(s.error().message.find("dup.csv:1:5: note: first seen here, on rank 0") != std::string::npos,
             s.error().message);
  BOOST_TEST(s.error().message.find("1F0,1B0") != std::string::npos);  // the source line
}

BOOST_AUTO_TEST_CASE(communication_actions_can_be_skipped) {
  source_set src;
  schedule::csv_import_options opt;
  opt.ignore_comm_actions = true;
  auto s = schedule::parse_pytorch_csv(src, src.add("comms.csv", "0F0,0SEND_F0,0RECV_B0,0B0\n1RECV_F0,1F0,1B0,1SEND_B0\n"),
                                       opt);
  BOOST_TEST_REQUIRE(s.has_value(), (s ? "" : s.error().message));
  BOOST_TEST(schedule::format_actions(*s) == "rank 0: F0.0 B0.0\nrank 1: F0.0 B0.0\n");
}

BOOST_AUTO_TEST_SUITE_END()
