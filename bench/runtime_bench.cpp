// The actor runtime's cost: overhead per op with ops that take no time, and, with one rank (pp = ep =
// 1), a real CPU training step through the actors against a plain loop calling the same kernels.
#include <benchmark/benchmark.h>

#include "dsl/experiment_file.hpp"
#include "dsl/load.hpp"
#include "kernels/cpu/gemm.hpp"
#include "kernels/model/reference_trainer.hpp"
#include "runtime/exec/run.hpp"

namespace {

const std::string source_dir = LOOM_SOURCE_DIR;

struct prepared {
  loom::exec::experiment e;
  loom::schedule::schedule s;
};

prepared prepare(const std::string& text) {
  auto e = loom::dsl::parse_experiment(text, "bench.toml", source_dir + "/examples");
  if (!e) throw std::runtime_error(e.error().message);
  loom::dsl::load_request req;
  req.path = e->schedule_file;
  for (const auto& [k, v] : e->schedule_params) req.set[k] = v;
  auto s = loom::dsl::load_schedule(req);
  if (!s) throw std::runtime_error(s.error().message);
  return {std::move(*e), std::move(s->sched)};
}

// Zero-cost ops on the timed backend: what remains is the runtime (messages, bookkeeping).
void overhead_per_op(benchmark::State& state) {
  const int pp = static_cast<int>(state.range(0));
  const std::string schedule = pp == 1 ? "gpipe" : "dualpipe";
  auto p = prepare("name = \"overhead\"\nsteps = 20\nbackend = \"timed\"\n"
                   "[model]\nhidden = 8\nheads = 1\nlayers = " + std::to_string(std::max(pp, 1)) +
                   "\nexperts = 2\ntop_k = 1\nexpert_ffn = 8\nshared_ffn = 0\nvocab = 8\nseq_len = 2\n"
                   "[batch]\nmicrobatch_size = 1\n[parallel]\npp = " + std::to_string(pp) + "\n"
                   "[schedule]\nfile = \"../schedules/" + schedule + ".sched\"\nmicrobatches = " + std::to_string(std::max(2 * pp, 20)) +
                   "\n[costs]\nattn = 0\nmlp = 0\nattn_b = 0\nattn_w = 0\nmlp_b = 0\nmlp_w = 0\n");
  double ops = 0, seconds = 0;
  for (auto _ : state) {
    auto r = loom::exec::run_experiment(p.e, p.s);
    if (!r || !r->ok) {
      state.SkipWithError("run failed");
      return;
    }
    for (const auto& step : r->outcome.steps) {
      std::int64_t span = 0;
      double rank_ops = 0;
      for (const auto& rank : step.ranks) {
        rank_ops += static_cast<double>(rank.ops.size());
        span = std::max(span, rank.end_ns);
      }
      ops += rank_ops / static_cast<double>(step.ranks.size());
      seconds += static_cast<double>(span) * 1e-9;
    }
  }
  // The step's span over the ops each rank ran: with one rank, the runtime's cost per op.
  state.counters["us_per_op"] = seconds / ops * 1e6;
  state.counters["ops_per_rank_step"] = ops / static_cast<double>(state.iterations() * 20);
}

const char* small_model =
    "name = \"loop-vs-actors\"\nseed = 3\nsteps = 3\nbackend = \"cpu\"\n"
    "[model]\nhidden = 128\nheads = 4\nlayers = 4\nexperts = 8\ntop_k = 2\nexpert_ffn = 128\nshared_ffn = 128\n"
    "vocab = 512\nseq_len = 64\n[batch]\nmicrobatch_size = 4\n[parallel]\npp = 1\nep = 1\n"
    "[schedule]\nfile = \"../schedules/gpipe.sched\"\nmicrobatches = 8\n";

void actors_one_rank(benchmark::State& state) {
  auto p = prepare(small_model);
  for (auto _ : state) {
    auto r = loom::exec::run_experiment(p.e, p.s);
    if (!r || !r->ok) {
      state.SkipWithError("run failed");
      return;
    }
    benchmark::DoNotOptimize(r->loss.back());
  }
  state.counters["steps"] = 3;
}

void plain_loop(benchmark::State& state) {
  auto p = prepare(small_model);
  loom::model::reference_config c;
  c.shape.hidden = p.e.model.hidden;
  c.shape.heads = p.e.model.heads;
  c.shape.experts = p.e.model.experts;
  c.shape.top_k = p.e.model.top_k;
  c.shape.expert_ffn = p.e.model.expert_ffn;
  c.shape.shared_ffn = p.e.model.shared_ffn;
  c.shape.vocab = p.e.model.vocab;
  c.shape.seq_len = p.e.model.seq_len;
  c.layers = p.e.model.layers;
  c.microbatches = 8;
  c.microbatch_size = p.e.microbatch_size;
  c.steps = p.e.steps;
  c.seed = p.e.seed;
  loom::kernels::cpu::set_blas_threads(1);  // as the runtime does
  for (auto _ : state) {
    auto r = loom::model::train_reference(c);
    benchmark::DoNotOptimize(r.loss.back());
  }
  state.counters["steps"] = 3;
}

}  // namespace

BENCHMARK(overhead_per_op)->Arg(1)->Arg(8)->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(plain_loop)->Unit(benchmark::kMillisecond)->MinTime(3);
BENCHMARK(actors_one_rank)->Unit(benchmark::kMillisecond)->MinTime(3);

BENCHMARK_MAIN();
