// How fast the schedule toolchain is: compile + validate + simulate DualPipe at growing sizes, to show
// the cost grows linearly with the number of actions. (The whole-process figure for ranks=64,
// microbatches=1024 is `loom sim` timed with /usr/bin/time: docs/PERFORMANCE.md.)
#include <benchmark/benchmark.h>

#include "dsl/load.hpp"
#include "runtime/sim/action_sim.hpp"

namespace {

const std::string dualpipe = std::string(LOOM_SOURCE_DIR) + "/schedules/dualpipe.sched";

void compile_validate_simulate(benchmark::State& state) {
  const int ranks = static_cast<int>(state.range(0)), microbatches = static_cast<int>(state.range(1));
  std::size_t actions = 0;
  for (auto _ : state) {
    loom::dsl::load_request req;
    req.path = dualpipe;
    req.set = {{"ranks", std::to_string(ranks)}, {"microbatches", std::to_string(microbatches)}};
    auto loaded = loom::dsl::load_schedule(req);
    if (!loaded) {
      state.SkipWithError(loaded.error().message.c_str());
      return;
    }
    auto t = loom::sim::simulate_actions(loaded->sched, {});
    benchmark::DoNotOptimize(t.makespan);
    actions = loaded->sched.action_count();
  }
  state.counters["actions"] = static_cast<double>(actions);
  state.counters["ns_per_action"] =
      benchmark::Counter(static_cast<double>(actions), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

}  // namespace

BENCHMARK(compile_validate_simulate)
    ->Args({8, 64})
    ->Args({16, 256})
    ->Args({32, 512})
    ->Args({64, 1024})
    ->Args({128, 2048})
    ->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
