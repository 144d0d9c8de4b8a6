// The reference cases: every shared action order loads, validates, prints back unchanged, and the
// action-level simulator reproduces every makespan and idle time of sim-public.json.
#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "runtime/schedule/action_text.hpp"
#include "runtime/schedule/validate.hpp"
#include "runtime/sim/action_sim.hpp"
#include "runtime/sim/component_sim.hpp"

namespace fs = std::filesystem;
using namespace loom;

namespace {

std::string read(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

fs::path cases() { return fs::path(LOOM_SHARED_CASES); }

schedule::schedule load_case(const std::string& name, source_set& src) {
  auto id = src.load((cases() / "schedules" / name).string(), 1 << 20);
  BOOST_TEST_REQUIRE(id.has_value(), (id ? "" : id.error().message));
  auto s = schedule::parse_actions(src, *id);
  BOOST_TEST_REQUIRE(s.has_value(), (s ? "" : s.error().message));
  return std::move(*s);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(schedule_cases)

BOOST_AUTO_TEST_CASE(every_shared_action_order_validates_and_round_trips) {
  int seen = 0;
  for (const auto& entry : fs::directory_iterator(cases() / "schedules")) {
    BOOST_TEST_CONTEXT(entry.path().filename()) {
      source_set src;
      auto s = load_case(entry.path().filename().string(), src);
      auto ok = schedule::validate(s, src);
      BOOST_TEST(ok.has_value(), (ok ? "" : ok.error().message));
      BOOST_TEST(schedule::format_actions(s) == read(entry.path()));
      ++seen;
    }
  }
  BOOST_TEST(seen >= 6);
}

BOOST_AUTO_TEST_CASE(simulator_reproduces_sim_public) {
  auto cases_json = nlohmann::json::parse(read(cases() / "sim-public.json"));
  BOOST_TEST_REQUIRE(cases_json.size() >= 5u);
  for (const auto& c : cases_json) {
    std::string file = c["schedule"].get<std::string>() + "-r" + std::to_string(c["ranks"].get<int>()) + "-m" +
                       std::to_string(c["microbatches"].get<int>()) + ".txt";
    BOOST_TEST_CONTEXT(file << " FB=" << c["cost"]["FB"]) {
      source_set src;
      auto s = load_case(file, src);
      sim::action_costs costs{c["cost"]["F"], c["cost"]["B"], c["cost"]["W"], c["cost"]["FB"]};
      auto t = sim::simulate_actions(s, costs);
      BOOST_TEST(t.makespan == c["makespan"].get<double>());
      std::vector<double> idle = c["idle"].get<std::vector<double>>();
      BOOST_TEST(t.idle == idle, boost::test_tools::per_element());
    }
  }
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(component_simulator)

// With free communication, the component level is the action level with the implied costs.
BOOST_AUTO_TEST_CASE(equals_action_level_when_communication_is_free) {
  for (const auto& entry : fs::directory_iterator(cases() / "schedules")) {
    for (int layers : {1, 3}) {
      BOOST_TEST_CONTEXT(entry.path().filename() << " layers=" << layers) {
        source_set src;
        auto s = load_case(entry.path().filename().string(), src);
        sim::component_costs c;
        c.layers = layers;
        c.attn = 0.25, c.mlp = 0.75, c.attn_b = 0.5, c.mlp_b = 1.25, c.attn_w = 0.375, c.mlp_w = 0.625;
        auto comp = sim::simulate_components(s, c);
        auto act = sim::simulate_actions(s, sim::implied_action_costs(c));
        BOOST_TEST(comp.actions.makespan == act.makespan, boost::test_tools::tolerance(1e-9));
        for (int r = 0; r < s.ranks(); ++r) {
          BOOST_TEST(comp.actions.idle[r] == act.idle[r], boost::test_tools::tolerance(1e-9));
          for (std::size_t i = 0; i < s.programs[r].size(); ++i)
            BOOST_TEST(comp.actions.spans[r][i].start == act.spans[r][i].start, boost::test_tools::tolerance(1e-9));
        }
      }
    }
  }
}

// DeepSeek-V3's recipe hides communication under computation inside a pair, and comm costs slow a
// schedule down (they are not free), but overlapped pairs hide most of them.
BOOST_AUTO_TEST_CASE(communication_is_hidden_in_pairs_and_costs_time_elsewhere) {
  source_set src;
  auto s = load_case("dualpipe-r8-m20.txt", src);
  sim::component_costs c;
  c.dispatch = c.combine = c.dispatch_b = c.combine_b = 0.4;
  auto comp = sim::simulate_components(s, c);
  sim::component_costs free = c;
  free.dispatch = free.combine = free.dispatch_b = free.combine_b = 0;
  auto base = sim::simulate_components(s, free);
  BOOST_TEST(comp.actions.makespan > base.actions.makespan);
  BOOST_TEST(comp.hidden_fraction() > 0.5);
  BOOST_TEST(comp.hidden_fraction() <= 1.0);
}

BOOST_AUTO_TEST_SUITE_END()
