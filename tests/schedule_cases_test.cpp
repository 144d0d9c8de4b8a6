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
