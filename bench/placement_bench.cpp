// Planning time of the expert placement planner, and its imbalance next to the anchor's.
//   plan_61x256/zipf:S   61 layers x 256 experts into 288 slots (8 groups, 4 nodes, 32 GPUs), Zipf(S) loads;
//                        counters: imbalance mean/max over layers, and the anchor planner's rule's
//   plan_case/FILE       every layer of a shared case file; counters: imbalance mean/max, the file's anchor's
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "runtime/placement/case_file.hpp"
#include "runtime/placement/planner.hpp"

namespace lp = loom::placement;

namespace {

// Loads of `layers` layers: expert i of the hottest-first order gets 1e5 / (i+1)^s, +-10% noise,
// in a random order per layer (a fixed seed: every run plans the same loads).
std::vector<std::vector<double>> zipf_layers(std::size_t layers, std::size_t experts, double s) {
  std::mt19937 rng(61256);
  std::uniform_real_distribution<double> noise(0.9, 1.1);
  std::vector<std::vector<double>> out(layers, std::vector<double>(experts));
  for (auto& layer : out) {
    for (std::size_t i = 0; i < experts; ++i)
      layer[i] = std::round(1e5 / std::pow(double(i + 1), s) * noise(rng));
    std::shuffle(layer.begin(), layer.end(), rng);
  }
  return out;
}

void set_imbalance_counters(benchmark::State& state, const std::vector<lp::layer_plan>& plans) {
  double sum = 0, worst = 0;
  for (const auto& p : plans) sum += p.imbalance, worst = std::max(worst, p.imbalance);
  state.counters["imb_mean"] = sum / plans.size();
  state.counters["imb_max"] = worst;
}

void plan_61x256(benchmark::State& state, double s) {
  const auto loads = zipf_layers(61, 256, s);
  const lp::topology topo{288, 8, 4, 32};
  std::vector<lp::layer_plan> last;
  for (auto _ : state) {
    auto plans = lp::plan_layers(loads, topo);
    if (!plans) {
      state.SkipWithError(plans.error().message.c_str());
      return;
    }
    benchmark::DoNotOptimize(plans->data());
    last = std::move(*plans);
  }
  set_imbalance_counters(state, last);
  // The anchor planner's rule on the same loads, for comparison (not timed).
  double sum = 0, worst = 0;
  for (const auto& load : loads) {
    auto plain = lp::plan_layer_plain(load, topo);
    if (!plain) continue;
    sum += plain->imbalance;
    worst = std::max(worst, plain->imbalance);
  }
  state.counters["anchor_rule_mean"] = sum / loads.size();
  state.counters["anchor_rule_max"] = worst;
}

void plan_case(benchmark::State& state, const lp::load_case& c) {
  std::vector<lp::layer_plan> last;
  for (auto _ : state) {
    auto plans = lp::plan_layers(c.load, c.topo);
    if (!plans) {
      state.SkipWithError(plans.error().message.c_str());
      return;
    }
    benchmark::DoNotOptimize(plans->data());
    last = std::move(*plans);
  }
  set_imbalance_counters(state, last);
  if (!c.anchor_imbalance.empty()) {
    double sum = 0, worst = 0;
    for (double v : c.anchor_imbalance) sum += v, worst = std::max(worst, v);
    state.counters["anchor_mean"] = sum / c.anchor_imbalance.size();
    state.counters["anchor_max"] = worst;
  }
}

}  // namespace

int main(int argc, char** argv) {
  for (double s : {0.6, 1.0, 1.4})
    benchmark::RegisterBenchmark(("plan_61x256/zipf:" + std::to_string(s).substr(0, 3)).c_str(), plan_61x256,
                                 s)
        ->Unit(benchmark::kMillisecond);
  static std::vector<lp::load_case> cases;  // outlives the registered benchmarks
  std::vector<std::filesystem::path> files;
  const std::filesystem::path dir = std::filesystem::path(LOOM_SHARED_CASES) / "eplb";
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec))
    if (entry.path().extension() == ".json") files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  cases.reserve(files.size());
  for (const auto& f : files) {
    auto c = lp::load_case_file(f);
    if (!c) {
      std::cerr << c.error().message << "\n";
      return 1;
    }
    cases.push_back(std::move(*c));
    benchmark::RegisterBenchmark(("plan_case/" + f.filename().string()).c_str(), plan_case,
                                 std::cref(cases.back()))
        ->Unit(benchmark::kMicrosecond);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
