// The expert placement planner: the shared cases against their anchor, properties on random loads,
// and errors for bad inputs and malformed case files.
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "runtime/placement/case_file.hpp"
#include "runtime/placement/planner.hpp"

namespace fs = std::filesystem;
namespace lp = loom::placement;

namespace {

// Every eplb/*.json under the shared cases, sorted, so new case files are picked up.
std::vector<fs::path> case_files() {
  std::vector<fs::path> out;
  for (const auto& entry : fs::directory_iterator(fs::path(LOOM_SHARED_CASES) / "eplb"))
    if (entry.path().extension() == ".json") out.push_back(entry.path());
  std::sort(out.begin(), out.end());
  return out;
}

// The plain planners the real one must never lose to: copies to the highest load per copy, then
// longest-processing-time packing onto the lightest GPU with a free slot; groups spread evenly over nodes
// by the same rule in hierarchical mode. With `spread`, an expert gets at most one copy per GPU of its
// domain (when the domain has slots_per_gpu experts or more) and copies go to GPUs not holding the expert
// yet where possible; without, copies stack freely (the anchor planner's rule).
std::vector<std::size_t> baseline_pack(const std::vector<double>& load,
                                       const std::vector<std::size_t>& experts, std::size_t gpus,
                                       std::size_t spg, bool spread) {
  const std::size_t cap = spread && experts.size() >= spg ? gpus : gpus * spg;
  std::vector<std::size_t> count(experts.size(), 1);
  for (std::size_t spare = gpus * spg - experts.size(); spare > 0; --spare) {
    std::size_t best = experts.size();
    for (std::size_t i = 0; i < experts.size(); ++i)
      if (count[i] < cap &&
          (best == experts.size() || load[experts[i]] / count[i] > load[experts[best]] / count[best]))
        best = i;
    ++count[best];
  }
  std::vector<std::pair<double, std::size_t>> copies;
  for (std::size_t i = 0; i < experts.size(); ++i)
    for (std::size_t c = 0; c < count[i]; ++c) copies.emplace_back(load[experts[i]] / count[i], experts[i]);
  std::stable_sort(copies.begin(), copies.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<double> gpu_load(gpus, 0.0);
  std::vector<std::vector<std::size_t>> held(gpus);
  for (const auto& [w, e] : copies) {
    std::size_t g = gpus;
    for (int pass = 0; pass < 2 && g == gpus; ++pass)
      for (std::size_t k = 0; k < gpus; ++k) {
        const bool has = std::find(held[k].begin(), held[k].end(), e) != held[k].end();
        if (held[k].size() < spg && (pass == 1 || !spread || !has) &&
            (g == gpus || gpu_load[k] < gpu_load[g]))
          g = k;
      }
    held[g].push_back(e);
    gpu_load[g] += w;
  }
  std::vector<std::size_t> out;
  for (const auto& h : held) out.insert(out.end(), h.begin(), h.end());
  return out;
}

std::vector<std::size_t> baseline(const std::vector<double>& load, const lp::topology& t, bool spread) {
  const std::size_t experts = load.size();
  if (!t.hierarchical()) {
    std::vector<std::size_t> all(experts);
    std::iota(all.begin(), all.end(), std::size_t{0});
    return baseline_pack(load, all, t.num_gpus, t.slots_per_gpu(), spread);
  }
  const std::size_t per_group = experts / t.num_groups, per_node = t.num_groups / t.num_nodes;
  std::vector<double> group_load(t.num_groups, 0.0);
  for (std::size_t e = 0; e < experts; ++e) group_load[e / per_group] += load[e];
  std::vector<std::size_t> order(t.num_groups);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return group_load[a] > group_load[b]; });
  std::vector<double> node_load(t.num_nodes, 0.0);
  std::vector<std::vector<std::size_t>> node_experts(t.num_nodes);
  std::vector<std::size_t> used(t.num_nodes, 0);
  for (std::size_t grp : order) {
    std::size_t n = t.num_nodes;
    for (std::size_t k = 0; k < t.num_nodes; ++k)
      if (used[k] < per_node && (n == t.num_nodes || node_load[k] < node_load[n])) n = k;
    ++used[n];
    node_load[n] += group_load[grp];
    for (std::size_t e = grp * per_group; e < (grp + 1) * per_group; ++e) node_experts[n].push_back(e);
  }
  std::vector<std::size_t> out;
  for (const auto& ex : node_experts) {
    auto part = baseline_pack(load, ex, t.gpus_per_node(), t.slots_per_gpu(), spread);
    out.insert(out.end(), part.begin(), part.end());
  }
  return out;
}

// Plans `load` on `t` and checks everything a plan promises; returns its imbalance.
double plan_and_check(const std::vector<double>& load, const lp::topology& t, const std::string& what) {
  auto plan = lp::plan_layer(load, t);
  BOOST_TEST_REQUIRE(plan.has_value(), what << ": " << (plan ? "" : plan.error().message));
  auto ok = lp::validate(load.size(), plan->phy2log, t, plan->replica_counts, plan->stacked);
  BOOST_TEST_REQUIRE(ok.has_value(), what << ": " << (ok ? "" : ok.error().message));
  BOOST_TEST(plan->hierarchical == t.hierarchical(), what);
  auto imb = lp::imbalance(load, plan->phy2log, t.num_gpus);
  BOOST_TEST_REQUIRE(imb.has_value());
  BOOST_TEST(std::fabs(*imb - plan->imbalance) <= 1e-12, what);
  BOOST_TEST(plan->imbalance >= 1.0 - 1e-12, what);
  auto plain = lp::plan_layer_plain(load, t);
  BOOST_TEST_REQUIRE(plain.has_value());
  BOOST_TEST(plan->imbalance <= plain->imbalance + 1e-12, what);
  for (bool spread : {true, false}) {
    auto base = lp::imbalance(load, baseline(load, t, spread), t.num_gpus);
    BOOST_TEST_REQUIRE(base.has_value());
    BOOST_TEST(plan->imbalance <= *base + 1e-9, what << ": loom " << plan->imbalance << " vs baseline "
                                                     << *base << (spread ? " (spread)" : " (stacking)"));
  }
  return plan->imbalance;
}

std::vector<double> zipf_loads(std::size_t experts, double s, std::mt19937& rng) {
  std::vector<double> load(experts);
  std::uniform_real_distribution<double> noise(0.9, 1.1);
  for (std::size_t i = 0; i < experts; ++i)
    load[i] = std::round(1e5 / std::pow(double(i + 1), s) * noise(rng));
  std::shuffle(load.begin(), load.end(), rng);
  return load;
}

std::string describe(const lp::topology& t, std::size_t experts) {
  return std::to_string(experts) + " experts, " + std::to_string(t.num_slots) + " slots, " +
         std::to_string(t.num_groups) + " groups, " + std::to_string(t.num_nodes) + " nodes, " +
         std::to_string(t.num_gpus) + " GPUs";
}

fs::path write_temp(const std::string& name, const std::string& text) {
  const std::string unique = std::to_string(std::random_device{}());
  fs::path p = fs::temp_directory_path() / ("loom-placement-test-" + unique + "-" + name);
  std::ofstream(p) << text;
  return p;
}

// The error message of parsing `text`, or "" when it parses.
std::string parse_error_of(const std::string& text) {
  auto c = lp::parse_load_case(text, "case.json");
  return c ? std::string() : c.error().message;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

const std::string good_case =
    R"({"num_replicas": 8, "num_groups": 2, "num_nodes": 2, "num_gpus": 4, "load": [[5, 1, 3, 2, 8, 1]]})";

}  // namespace

BOOST_AUTO_TEST_SUITE(placement_cases)

BOOST_AUTO_TEST_CASE(at_least_as_balanced_as_the_anchor_on_every_layer) {
  const auto files = case_files();
  BOOST_TEST_REQUIRE(!files.empty(), "no case files under " << LOOM_SHARED_CASES << "/eplb");
  for (const auto& file : files) {
    auto c = lp::load_case_file(file);
    BOOST_TEST_REQUIRE(c.has_value(), (c ? "" : c.error().message));
    BOOST_TEST_REQUIRE(c->anchor_imbalance.size() == c->load.size(),
                       file << " has no anchor_imbalance per layer");
    auto plans = lp::plan_layers(c->load, c->topo);
    BOOST_TEST_REQUIRE(plans.has_value(), (plans ? "" : plans.error().message));
    BOOST_TEST_REQUIRE(plans->size() == c->load.size());
    for (std::size_t l = 0; l < c->load.size(); ++l) {
      const std::string what = file.filename().string() + " layer " + std::to_string(l);
      const double imb = plan_and_check(c->load[l], c->topo, what);
      BOOST_TEST(imb == (*plans)[l].imbalance, what);
      BOOST_TEST(imb <= c->anchor_imbalance[l] + 1e-9,
                 what << ": loom " << imb << " vs anchor " << c->anchor_imbalance[l]);
      BOOST_TEST_MESSAGE(what << ": loom " << imb << ", anchor " << c->anchor_imbalance[l]
                              << ((*plans)[l].stacked ? " (stacked)" : ""));
    }
  }
}

BOOST_AUTO_TEST_CASE(imbalance_reproduces_the_anchor_figures) {
  for (const auto& file : case_files()) {
    auto c = lp::load_case_file(file);
    BOOST_TEST_REQUIRE(c.has_value(), (c ? "" : c.error().message));
    for (std::size_t l = 0; l < c->anchor_phy2log.size(); ++l) {
      auto imb = lp::imbalance(c->load[l], c->anchor_phy2log[l], c->topo.num_gpus);
      BOOST_TEST_REQUIRE(imb.has_value(), (imb ? "" : imb.error().message));
      BOOST_TEST(std::fabs(*imb - c->anchor_imbalance[l]) <= 1e-9, file.filename() << " layer " << l);
    }
  }
}

BOOST_AUTO_TEST_CASE(the_plain_rule_reproduces_the_anchor) {
  for (const auto& file : case_files()) {
    auto c = lp::load_case_file(file);
    BOOST_TEST_REQUIRE(c.has_value(), (c ? "" : c.error().message));
    for (std::size_t l = 0; l < c->anchor_imbalance.size(); ++l) {
      auto plain = lp::plan_layer_plain(c->load[l], c->topo);
      BOOST_TEST_REQUIRE(plain.has_value(), (plain ? "" : plain.error().message));
      BOOST_TEST(
          std::fabs(plain->imbalance - c->anchor_imbalance[l]) <= 1e-9,
          file.filename() << " layer " << l << ": " << plain->imbalance << " vs " << c->anchor_imbalance[l]);
      auto plan = lp::plan_layer(c->load[l], c->topo);
      BOOST_TEST_REQUIRE(plan.has_value());
      BOOST_TEST(plan->imbalance <= plain->imbalance + 1e-12);
    }
  }
}

BOOST_AUTO_TEST_CASE(groups_stay_on_one_node) {
  for (const auto& file : case_files()) {
    auto c = lp::load_case_file(file);
    BOOST_TEST_REQUIRE(c.has_value());
    if (!c->topo.hierarchical()) continue;
    const std::size_t per_group = c->num_experts() / c->topo.num_groups;
    const std::size_t per_node = c->topo.num_slots / c->topo.num_nodes;
    for (const auto& load : c->load) {
      auto plan = lp::plan_layer(load, c->topo);
      BOOST_TEST_REQUIRE(plan.has_value());
      std::vector<std::size_t> node(c->topo.num_groups, c->topo.num_nodes);
      for (std::size_t s = 0; s < plan->phy2log.size(); ++s) {
        const std::size_t grp = plan->phy2log[s] / per_group;
        if (node[grp] == c->topo.num_nodes) node[grp] = s / per_node;
        BOOST_TEST(node[grp] == s / per_node, file.filename() << ": group " << grp << " split");
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(planning_is_deterministic) {
  const auto files = case_files();
  BOOST_TEST_REQUIRE(!files.empty());
  auto c = lp::load_case_file(files.front());
  BOOST_TEST_REQUIRE(c.has_value());
  auto a = lp::plan_layers(c->load, c->topo), b = lp::plan_layers(c->load, c->topo);
  BOOST_TEST_REQUIRE((a.has_value() && b.has_value()));
  for (std::size_t l = 0; l < a->size(); ++l) BOOST_TEST((*a)[l].phy2log == (*b)[l].phy2log);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(placement_properties)

BOOST_AUTO_TEST_CASE(random_topologies_and_skews) {
  std::mt19937 rng(20240611);
  std::uniform_int_distribution<int> pick(0, 1 << 20);
  const std::size_t node_choices[] = {1, 2, 3, 4};
  const std::size_t gpn_choices[] = {1, 2, 4, 8};
  int hierarchical = 0, global = 0;
  for (int trial = 0; trial < 400; ++trial) {
    lp::topology t;
    t.num_nodes = node_choices[pick(rng) % 4];
    t.num_gpus = t.num_nodes * gpn_choices[pick(rng) % 4];
    const std::size_t spg = 1 + pick(rng) % 9;
    t.num_slots = t.num_gpus * spg;
    // experts = groups * per_group <= slots; groups a multiple of nodes half the time
    std::size_t groups = 0, per_group = 0;
    do {
      groups = 1 + pick(rng) % 12;
      if (pick(rng) % 2 == 0) groups = t.num_nodes * (1 + pick(rng) % 3);
      per_group = 1 + pick(rng) % 10;
    } while (groups * per_group > t.num_slots);
    t.num_groups = groups;
    const std::size_t experts = groups * per_group;
    (t.hierarchical() ? hierarchical : global) += 1;
    std::vector<double> load;
    switch (trial % 4) {
      case 0:
        load = zipf_loads(experts, 0.6 + (pick(rng) % 100) / 100.0, rng);
        break;
      case 1:
        load = zipf_loads(experts, 1.2 + (pick(rng) % 60) / 100.0, rng);
        break;
      case 2: {
        std::uniform_real_distribution<double> u(0, 1000);
        for (std::size_t e = 0; e < experts; ++e) load.push_back(u(rng));
        break;
      }
      default: {
        std::exponential_distribution<double> x(1.0);
        for (std::size_t e = 0; e < experts; ++e)
          load.push_back(pick(rng) % 5 == 0 ? 0.0 : std::round(100 * x(rng)));
      }
    }
    plan_and_check(load, t, "trial " + std::to_string(trial) + " (" + describe(t, experts) + ")");
  }
  BOOST_TEST(hierarchical > 50);
  BOOST_TEST(global > 50);
}

BOOST_AUTO_TEST_CASE(the_benchmark_shape_global_and_hierarchical) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 6; ++trial) {
    const auto load = zipf_loads(256, 0.8 + 0.1 * trial, rng);
    plan_and_check(load, {288, 8, 4, 32}, "256 experts hierarchical, trial " + std::to_string(trial));
    plan_and_check(load, {288, 8, 3, 24}, "256 experts global, trial " + std::to_string(trial));
    plan_and_check(load, {320, 8, 1, 64}, "256 experts one node, trial " + std::to_string(trial));
  }
}

BOOST_AUTO_TEST_CASE(no_spare_slots) {
  std::mt19937 rng(11);
  const auto load = zipf_loads(64, 1.0, rng);
  auto plan = lp::plan_layer(load, {64, 8, 2, 16});
  BOOST_TEST_REQUIRE(plan.has_value());
  for (std::size_t c : plan->replica_counts) BOOST_TEST(c == 1u);
  plan_and_check(load, {64, 8, 2, 16}, "slots == experts, hierarchical");
  plan_and_check(load, {64, 2, 4, 16}, "slots == experts, global");
  plan_and_check(load, {64, 1, 1, 64}, "one slot per GPU");
}

BOOST_AUTO_TEST_CASE(one_gpu_is_perfectly_balanced) {
  std::mt19937 rng(3);
  const auto load = zipf_loads(10, 1.3, rng);
  auto plan = lp::plan_layer(load, {16, 2, 1, 1});
  BOOST_TEST_REQUIRE(plan.has_value());
  BOOST_TEST(plan->imbalance == 1.0, boost::test_tools::tolerance(1e-12));
  plan_and_check(load, {16, 2, 1, 1}, "one GPU");
}

BOOST_AUTO_TEST_CASE(equal_and_zero_loads) {
  const std::vector<double> equal(32, 7.0), zero(32, 0.0);
  auto eq = lp::plan_layer(equal, {32, 4, 2, 8});
  BOOST_TEST_REQUIRE(eq.has_value());
  BOOST_TEST(eq->imbalance == 1.0, boost::test_tools::tolerance(1e-12));
  auto z = lp::plan_layer(zero, {40, 4, 2, 8});
  BOOST_TEST_REQUIRE(z.has_value());
  BOOST_TEST(z->imbalance == 1.0);
  plan_and_check(equal, {48, 4, 2, 8}, "equal loads with spare slots");
  plan_and_check(zero, {40, 4, 2, 8}, "zero loads");
  plan_and_check({0, 0, 0, 9}, {8, 1, 1, 4}, "one hot expert among idle ones");
}

BOOST_AUTO_TEST_CASE(more_slots_per_gpu_than_experts) {
  // Duplicates on a GPU cannot be avoided here; the plan is still valid and balanced.
  plan_and_check({10, 1, 1}, {8, 1, 1, 2}, "3 experts on 2 GPUs of 4 slots");
  plan_and_check({10, 1, 1, 4}, {16, 2, 2, 4}, "2 experts per node, 4 slots per GPU");
  auto plan = lp::plan_layer(std::vector<double>{5}, {4, 1, 1, 2});
  BOOST_TEST_REQUIRE(plan.has_value());
  BOOST_TEST(plan->imbalance == 1.0, boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(copies_of_an_expert_sit_on_different_gpus) {
  std::mt19937 rng(5);
  const auto load = zipf_loads(64, 1.4, rng);
  const lp::topology t{128, 8, 2, 16};
  auto plan = lp::plan_layer(load, t);
  BOOST_TEST_REQUIRE(plan.has_value());
  BOOST_TEST(!plan->stacked);
  const std::size_t spg = t.slots_per_gpu();
  for (std::size_t g = 0; g < t.num_gpus; ++g) {
    std::vector<std::size_t> held(plan->phy2log.begin() + g * spg, plan->phy2log.begin() + (g + 1) * spg);
    std::sort(held.begin(), held.end());
    BOOST_TEST((std::adjacent_find(held.begin(), held.end()) == held.end()),
               "GPU " << g << " holds an expert twice");
  }
}

BOOST_AUTO_TEST_CASE(imbalance_of_a_hand_made_placement) {
  // 2 GPUs: {0, 1} and {0, 2}; expert 0 (load 4) has 2 copies of 2 -> loads 2+1=3 and 2+3=5, mean 4.
  auto imb = lp::imbalance(std::vector<double>{4, 1, 3}, std::vector<std::size_t>{0, 1, 0, 2}, 2);
  BOOST_TEST_REQUIRE(imb.has_value());
  BOOST_TEST(*imb == 1.25, boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(placement_errors)

BOOST_AUTO_TEST_CASE(bad_topologies) {
  const std::vector<double> load(12, 1.0);
  struct bad_case {
    lp::topology t;
    const char* says;
  } cases[] = {
      {{18, 4, 2, 8}, "not divisible by num_gpus"},
      {{16, 4, 3, 8}, "not divisible by num_nodes"},
      {{16, 5, 1, 8}, "not divisible by num_groups"},
      {{8, 4, 2, 8}, "smaller than the number of experts"},
      {{16, 4, 2, 0}, "at least 1"},
      {{16, 0, 2, 8}, "at least 1"},
      {{0, 4, 2, 8}, "at least 1"},
      {{1 << 20, 4, 2, 8}, "supported"},
  };
  for (const auto& c : cases) {
    auto plan = lp::plan_layer(load, c.t);
    BOOST_TEST_REQUIRE(!plan.has_value(), c.says);
    BOOST_TEST(contains(plan.error().message, c.says), plan.error().message);
  }
  auto empty = lp::plan_layer(std::vector<double>{}, {8, 1, 1, 8});
  BOOST_TEST_REQUIRE(!empty.has_value());
  BOOST_TEST(contains(empty.error().message, "no experts"));
}

BOOST_AUTO_TEST_CASE(bad_loads) {
  const lp::topology t{8, 1, 1, 4};
  for (double bad : {-1.0, std::nan(""), std::numeric_limits<double>::infinity()}) {
    auto plan = lp::plan_layer(std::vector<double>{1, 2, bad, 4}, t);
    BOOST_TEST_REQUIRE(!plan.has_value());
    BOOST_TEST((plan.error().code == loom::errc::invalid_argument));
    BOOST_TEST(contains(plan.error().message, "expert 2"), plan.error().message);
  }
  auto ragged = lp::plan_layers({{1, 2, 3, 4}, {1, 2, 3}}, t);
  BOOST_TEST_REQUIRE(!ragged.has_value());
  BOOST_TEST(contains(ragged.error().message, "layer 1"), ragged.error().message);
  auto bad_layer = lp::plan_layers({{1, 2, 3, 4}, {1, -2, 3, 4}}, t);
  BOOST_TEST_REQUIRE(!bad_layer.has_value());
  BOOST_TEST(contains(bad_layer.error().message, "layer 1: the load of expert 1"), bad_layer.error().message);
}

BOOST_AUTO_TEST_CASE(bad_placements) {
  const std::vector<double> load{1, 2, 3, 4};
  auto out_of_range = lp::imbalance(load, std::vector<std::size_t>{0, 1, 2, 7}, 2);
  BOOST_TEST_REQUIRE(!out_of_range.has_value());
  BOOST_TEST(contains(out_of_range.error().message, "slot 3 holds expert 7"));
  auto missing = lp::imbalance(load, std::vector<std::size_t>{0, 1, 2, 2}, 2);
  BOOST_TEST_REQUIRE(!missing.has_value());
  BOOST_TEST(contains(missing.error().message, "expert 3 has no copy"));
  auto uneven = lp::imbalance(load, std::vector<std::size_t>{0, 1, 2, 3, 0}, 2);
  BOOST_TEST(!uneven.has_value());

  const lp::topology t{8, 2, 2, 4};  // groups {0,1} and {2,3}; nodes hold slots 0-3 and 4-7
  BOOST_TEST(lp::validate(4, std::vector<std::size_t>{0, 1, 0, 1, 2, 3, 2, 3}, t).has_value());
  auto split = lp::validate(4, std::vector<std::size_t>{0, 1, 2, 1, 0, 3, 2, 3}, t);
  BOOST_TEST_REQUIRE(!split.has_value());
  BOOST_TEST(contains(split.error().message, "split over nodes"), split.error().message);
  auto twice = lp::validate(4, std::vector<std::size_t>{0, 0, 1, 1, 2, 3, 2, 3}, t);
  BOOST_TEST_REQUIRE(!twice.has_value());
  BOOST_TEST(contains(twice.error().message, "twice"), twice.error().message);
  const std::vector<std::size_t> wrong_counts{1, 2, 2, 2};
  auto counts = lp::validate(4, std::vector<std::size_t>{0, 1, 0, 1, 2, 3, 2, 3}, t, wrong_counts);
  BOOST_TEST_REQUIRE(!counts.has_value());
  BOOST_TEST(contains(counts.error().message, "replica count"), counts.error().message);
  auto short_plan = lp::validate(4, std::vector<std::size_t>{0, 1, 2, 3}, t);
  BOOST_TEST(!short_plan.has_value());
}

BOOST_AUTO_TEST_CASE(malformed_case_files) {
  BOOST_TEST(parse_error_of(good_case).empty(), parse_error_of(good_case));
  struct bad_case {
    std::string text;
    const char* says;
  } cases[] = {
      {"", "case.json:1:1: malformed JSON"},
      {"{\"num_replicas\": 8,\n \"load\": [[1, 2,]]}", "case.json:2:"},
      {"[1, 2]", "top level: must be a JSON object"},
      {R"({"num_groups": 2, "num_nodes": 2, "num_gpus": 4, "load": [[1]]})", "num_replicas: missing"},
      {R"({"num_replicas": 8, "num_groups": 2, "num_nodes": 2, "num_gpus": 4})", "load: missing"},
      {R"({"num_replicas": 8.5, "num_groups": 2, "num_nodes": 2, "num_gpus": 4, "load": [[1]]})",
       "num_replicas: must be a positive integer"},
      {R"({"num_replicas": 8, "num_groups": -2, "num_nodes": 2, "num_gpus": 4, "load": [[1]]})",
       "num_groups: must be a positive integer"},
      {R"({"num_replicas": 8, "num_groups": 2, "num_nodes": "2", "num_gpus": 4, "load": [[1]]})",
       "num_nodes: must be a positive integer"},
      {R"({"num_replicas": 8, "num_groups": 2, "num_nodes": 2, "num_gpus": 4, "load": [1, 2]})",
       "load[0]: must be a non-empty array"},
      {R"({"num_replicas": 8, "num_groups": 2, "num_nodes": 2, "num_gpus": 4, "load": []})",
       "load: must be a non-empty array"},
      {R"({"num_replicas": 8, "num_groups": 2, "num_nodes": 2, "num_gpus": 4, "load": [[1, 2], [1, 2, 3]]})",
       "load[1]: has 3 experts, load[0] has 2"},
      {R"({"num_replicas": 8, "num_groups": 2, "num_nodes": 2, "num_gpus": 4, "load": [[1, -2]]})",
       "load[0][1]: is -2; loads must be >= 0"},
      {R"({"num_replicas": 8, "num_groups": 2, "num_nodes": 2, "num_gpus": 4, "load": [[1, "x"]]})",
       "load[0][1]: must be a number"},
      {R"({"num_replicas": 9, "num_groups": 2, "num_nodes": 2, "num_gpus": 4, "load": [[1, 2]]})",
       "case.json: num_replicas (9) is not divisible by num_gpus (4)"},
      {R"({"num_replicas": 8, "num_groups": 2, "num_nodes": 2, "num_gpus": 4, "load": [[1, 2]],
           "anchor_phy2log": [[0, 1]]})",
       "anchor_phy2log[0]: must be an array of num_replicas = 8"},
      {R"({"num_replicas": 4, "num_groups": 2, "num_nodes": 2, "num_gpus": 4, "load": [[1, 2]],
           "anchor_phy2log": [[0, 1, 0, 5]]})",
       "anchor_phy2log[0][3]: must be an expert index below 2"},
      {R"({"num_replicas": 4, "num_groups": 2, "num_nodes": 2, "num_gpus": 4, "load": [[1, 2]],
           "anchor_phy2log": [[0, 1, 0, -1]]})",
       "anchor_phy2log[0][3]"},
      {R"({"num_replicas": 4, "num_groups": 2, "num_nodes": 2, "num_gpus": 4, "load": [[1, 2]],
           "anchor_imbalance": [1.0, 2.0]})",
       "anchor_imbalance: must be an array of 1 numbers"},
  };
  for (const auto& c : cases) {
    const std::string msg = parse_error_of(c.text);
    BOOST_TEST(contains(msg, c.says), "expected '" << c.says << "' in '" << msg << "'");
  }
}

BOOST_AUTO_TEST_CASE(unreadable_case_files) {
  auto missing = lp::load_case_file("/nonexistent/loads.json");
  BOOST_TEST_REQUIRE(!missing.has_value());
  BOOST_TEST((missing.error().code == loom::errc::io_error));
  BOOST_TEST(contains(missing.error().message, "/nonexistent/loads.json"));
  auto dir = lp::load_case_file(fs::temp_directory_path());
  BOOST_TEST_REQUIRE(!dir.has_value());
  BOOST_TEST(contains(dir.error().message, "directory"));
  const auto bad = write_temp("bad.json", "{\"load\": [[1, 2]]\n");
  auto parsed = lp::load_case_file(bad);
  BOOST_TEST_REQUIRE(!parsed.has_value());
  BOOST_TEST(contains(parsed.error().message, bad.string() + ":2:1: malformed JSON"), parsed.error().message);
  fs::remove(bad);
  const auto good = write_temp("good.json", good_case);
  auto ok = lp::load_case_file(good);
  BOOST_TEST_REQUIRE(ok.has_value(), (ok ? "" : ok.error().message));
  BOOST_TEST(ok->num_experts() == 6u);
  BOOST_TEST(ok->anchor_imbalance.empty());
  fs::remove(good);
}

BOOST_AUTO_TEST_SUITE_END()
