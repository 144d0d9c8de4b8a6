// The actor runtime on the CPU: every schedule trains the same model to the same numbers as a plain
// loop, the trace shows the compiled order, and failures end the experiment with a clear error.
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "dsl/experiment_file.hpp"
#include "dsl/load.hpp"
#include "kernels/gpu_probe.hpp"
#include "kernels/model/reference_trainer.hpp"
#include "runtime/exec/overlap_measure.hpp"
#include "runtime/exec/report_writer.hpp"
#include "runtime/exec/run.hpp"
#include "runtime/lower/lowering.hpp"

namespace fs = std::filesystem;
using namespace loom;

namespace {

const std::string source_dir = LOOM_SOURCE_DIR;

// A small experiment: 8 layers, 8 experts, 8 microbatches of 4 sequences.
std::string experiment_text(const std::string& schedule, int pp, int ep, int steps = 2) {
  std::ostringstream s;
  s << "name = \"equivalence\"\nseed = 11\nsteps = " << steps << "\nbackend = \"cpu\"\n"
    << "[model]\nhidden = 32\nheads = 2\nlayers = 8\nexperts = 8\ntop_k = 2\nexpert_ffn = 32\nshared_ffn = 16\n"
    << "vocab = 64\nseq_len = 8\n[batch]\nmicrobatch_size = 4\n[parallel]\npp = " << pp << "\nep = " << ep << "\n"
    << "[schedule]\nfile = \"" << source_dir << "/schedules/" << schedule << ".sched\"\nmicrobatches = 8\n"
    << "[optimizer]\nlr = 0.01\n";
  return s.str();
}

struct compiled {
  exec::experiment e;
  dsl::loaded_schedule s;
};

compiled prepare(const std::string& text, const std::vector<std::string>& overrides = {}) {
  auto e = dsl::parse_experiment(text, "test.toml", ".", overrides);
  BOOST_TEST_REQUIRE(e.has_value(), (e ? "" : e.error().message));
  dsl::load_request req;
  req.path = e->schedule_file;
  for (const auto& [k, v] : e->schedule_params) req.set[k] = v;
  auto s = dsl::load_schedule(req);
  BOOST_TEST_REQUIRE(s.has_value(), (s ? "" : s.error().message));
  return {std::move(*e), std::move(*s)};
}

model::reference_result reference(const exec::experiment& e, int microbatches) {
  model::reference_config c;
  c.shape.hidden = e.model.hidden;
  c.shape.heads = e.model.heads;
  c.shape.experts = e.model.experts;
  c.shape.top_k = e.model.top_k;
  c.shape.expert_ffn = e.model.expert_ffn;
  c.shape.shared_ffn = e.model.shared_ffn;
  c.shape.vocab = e.model.vocab;
  c.shape.seq_len = e.model.seq_len;
  c.shape.gate = e.model.gating == exec::gating_kind::sigmoid ? model::gating::sigmoid : model::gating::softmax;
  c.layers = e.model.layers;
  c.microbatches = microbatches;
  c.microbatch_size = e.microbatch_size;
  c.steps = e.steps;
  c.seed = e.seed;
  c.adamw = {e.optimizer.lr, e.optimizer.beta1, e.optimizer.beta2, e.optimizer.eps, e.optimizer.weight_decay};
  c.bias_update_rate = e.model.bias_update_rate;
  return model::train_reference(c);
}

double relative_difference(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

std::string read(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

BOOST_AUTO_TEST_SUITE(runtime_equivalence)

// The first test of every runtime change: a schedule changes when work runs, never what is computed.
// At one layout (pp, ep) every schedule gives the first schedule's gradients to double rounding. Against
// the single-rank loop the bound is float32's: with ep > 1 each rank's weight gradient covers its own
// sequences and the halves are summed in double, a different float32 summation order than one product
// over all sequences (seen: 1.3e-5 relative on one tensor with OpenBLAS's AVX-512 kernels).
BOOST_AUTO_TEST_CASE(every_schedule_matches_the_single_rank_loop) {
  for (const char* gating : {"softmax", "sigmoid"}) {
    auto base = prepare(experiment_text("gpipe", 2, 1), {std::string("model.gating=\"") + gating + "\""});
    auto ref = reference(base.e, 8);
    std::map<std::pair<int, int>, std::map<std::string, std::vector<double>>> first_grads;  // (pp, ep) -> tensor -> grad
    for (const std::string schedule : {"gpipe", "1f1b", "zb-h1", "dualpipe", "dualpipev"}) {
      for (int pp : {2, 4}) {
        for (int ep : {1, 2}) {
          if (std::string(gating) == "sigmoid" && (pp != 4 || ep != 2)) continue;  // one layout suffices there
          BOOST_TEST_CONTEXT(schedule << " pp=" << pp << " ep=" << ep << " gating=" << gating) {
            auto c = prepare(experiment_text(schedule, pp, ep), {std::string("model.gating=\"") + gating + "\""});
            exec::run_options opt;
            opt.collect_tensors = true;
            auto r = exec::run_experiment(c.e, c.s.sched, opt);
            BOOST_TEST_REQUIRE(r.has_value(), (r ? "" : r.error().message));
            BOOST_TEST_REQUIRE(r->ok, r->error);
            BOOST_TEST_REQUIRE(r->loss.size() == ref.loss.size());
            for (std::size_t i = 0; i < ref.loss.size(); ++i) {
              BOOST_TEST(r->loss[i] == ref.loss[i], boost::test_tools::tolerance(1e-5));
              BOOST_TEST(r->grad_norm[i] == ref.grad_norm[i], boost::test_tools::tolerance(1e-5));
            }
            // Every logical tensor's last gradient and its value after the updates.
            const double bound = ep == 1 ? 1e-5 : 1e-4;
            auto& first = first_grads[{pp, ep}];
            const bool is_first = first.empty();
            int compared = 0;
            for (const auto& p : ref.params.all()) {
              auto g = r->grads.find(p.name);
              BOOST_TEST_REQUIRE((g != r->grads.end()), "missing tensor " << p.name);
              const double off = relative_difference(g->second, p.grad);
              BOOST_TEST(off < bound, p.name << ": gradient differs from the loop's by " << off << " (relative)");
              if (is_first) {
                first[p.name] = g->second;
              } else {
                const double apart = relative_difference(g->second, first[p.name]);
                BOOST_TEST(apart < 1e-12, p.name << ": gradient differs from gpipe's at this layout by " << apart);
              }
              std::vector<double> mine(r->values[p.name].begin(), r->values[p.name].end());
              std::vector<double> theirs(p.value.begin(), p.value.end());
              BOOST_TEST(relative_difference(mine, theirs) < bound, p.name);
              ++compared;
            }
            BOOST_TEST(compared == static_cast<int>(ref.params.all().size()));
          }
        }
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(loss_falls_over_steps) {
  auto c = prepare(experiment_text("1f1b", 2, 2, 6));
  auto r = exec::run_experiment(c.e, c.s.sched);
  BOOST_TEST_REQUIRE(r.has_value());
  BOOST_TEST_REQUIRE(r->ok, r->error);
  BOOST_TEST(r->loss.back() < r->loss.front());
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(runtime_reports)

// trace.json holds one event per executed action per rank, in the compiled order.
BOOST_AUTO_TEST_CASE(trace_follows_the_compiled_order) {
  for (const std::string schedule : {"zb-h1", "dualpipe"}) {
    BOOST_TEST_CONTEXT(schedule) {
      auto c = prepare(experiment_text(schedule, 4, 2, 1));
      c.e.out_dir = (fs::temp_directory_path() / ("loom-trace-" + schedule)).string();
      auto r = exec::run_experiment(c.e, c.s.sched);
      BOOST_TEST_REQUIRE(r.has_value());
      BOOST_TEST_REQUIRE(r->ok, r->error);
      BOOST_TEST_REQUIRE(exec::write_outputs(c.e, c.s.sched, *r).has_value());
      auto trace = nlohmann::json::parse(read(fs::path(c.e.out_dir) / "trace.json"));
      // (rank, ep) -> action names by start time
      std::map<std::pair<int, int>, std::vector<std::pair<double, std::string>>> seen;
      for (const auto& ev : trace["traceEvents"]) {
        if (ev.value("ph", "") != "X" || ev.value("tid", -1) != 0) continue;
        seen[{ev["args"]["rank"].get<int>(), ev["args"]["ep"].get<int>()}].push_back({ev["ts"].get<double>(), ev["name"]});
      }
      BOOST_TEST(seen.size() == 8u);
      for (auto& [who, events] : seen) {
        std::stable_sort(events.begin(), events.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
        const auto& prog = c.s.sched.programs[who.first];
        BOOST_TEST_REQUIRE(events.size() == prog.size());
        for (std::size_t i = 0; i < prog.size(); ++i) BOOST_TEST(events[i].second == schedule::to_string(prog[i]));
      }
      auto report = nlohmann::json::parse(read(fs::path(c.e.out_dir) / "report.json"));
      BOOST_TEST(report["status"] == "ok");
      BOOST_TEST(report["loss"].size() == 1u);
      BOOST_TEST(report["schedule"]["params"]["microbatches"] == 8);
      BOOST_TEST(report["measured"]["makespan"].get<double>() > 0);
      BOOST_TEST(report["predicted"]["makespan"].get<double>() > 0);
      BOOST_TEST(report["measured"]["idle"].size() == 4u);
      BOOST_TEST(fs::file_size(fs::path(c.e.out_dir) / "timeline.svg") > 1000u);
    }
  }
}

// Inside an overlapped pair the compute ops leave the recipe's SMs to the comm ops beside them (the
// cuda backend caps their GEMMs' grids to the rest); outside pairs they may fill the GPU.
BOOST_AUTO_TEST_CASE(paired_compute_leaves_the_comm_budget_free) {
  auto c = prepare(experiment_text("dualpipe", 4, 2, 1));
  const auto low = lower::lower(c.s.sched, {2, 20});
  int paired = 0, plain = 0;
  for (std::size_t r = 0; r < low.ranks.size(); ++r) {
    const auto& prog = low.ranks[r];
    for (std::size_t a = 0; a < prog.action_ops.size(); ++a) {
      const bool pair = c.s.sched.programs[r][a].is_pair();
      int budget = 0;
      for (int id : prog.action_ops[a])
        if (actors::is_comm(prog.ops[id].kind)) budget = prog.ops[id].sms;
      if (pair) BOOST_TEST_REQUIRE(budget > 0);
      for (int id : prog.action_ops[a]) {
        const auto& o = prog.ops[id];
        const bool layer_part = o.kind != actors::op_kind::embed_f && o.kind != actors::op_kind::embed_w &&
                                o.kind != actors::op_kind::head_f && o.kind != actors::op_kind::head_b &&
                                o.kind != actors::op_kind::head_w;
        if (actors::is_comm(o.kind)) BOOST_TEST(o.sms == budget);
        else if (pair && layer_part) BOOST_TEST(o.sms == budget, actors::to_string(o.kind) << " of a pair on rank " << r);
        else BOOST_TEST(o.sms == 0, actors::to_string(o.kind) << " outside a pair on rank " << r);
        (pair ? paired : plain) += !actors::is_comm(o.kind);
      }
    }
  }
  BOOST_TEST(paired > 0);
  BOOST_TEST(plain > 0);
}

// A comm op's span is its send half, its wait for the peers and its receive half: the report counts
// the halves as communication, the trace draws only them, and the hidden part is what the same rank's
// compute covered (checked here against a plain sweep over the op times).
BOOST_AUTO_TEST_CASE(communication_is_measured_without_its_waits) {
  auto c = prepare(experiment_text("dualpipe", 4, 2, 1));
  c.e.out_dir = (fs::temp_directory_path() / "loom-comm-overlap").string();
  auto r = exec::run_experiment(c.e, c.s.sched);
  BOOST_TEST_REQUIRE(r.has_value());
  BOOST_TEST_REQUIRE(r->ok, r->error);
  const auto& so = r->outcome.steps.at(0);
  double span = 0, wait = 0, hidden = 0;
  int waited = 0, pairs = 0;
  for (std::size_t g = 0; g < so.ranks.size(); ++g) {
    const auto& prog = r->lowered.ranks[g / r->ep];
    for (const auto& action : c.s.sched.programs[g / r->ep]) pairs += action.second ? 1 : 0;
    std::vector<std::pair<std::int64_t, std::int64_t>> compute, busy;
    for (const auto& t : so.ranks[g].ops) {
      const auto kind = prog.ops[t.index].kind;
      if (kind == actors::op_kind::send || kind == actors::op_kind::recv) continue;
      if (!actors::is_comm(kind)) {
        compute.push_back({t.start_ns, t.end_ns});
        continue;
      }
      span += (t.end_ns - t.start_ns) * 1e-6;
      if (t.wait_end_ns > 0) {
        BOOST_TEST_REQUIRE(t.start_ns <= t.wait_start_ns);
        BOOST_TEST_REQUIRE(t.wait_start_ns <= t.wait_end_ns);
        BOOST_TEST_REQUIRE(t.wait_end_ns <= t.end_ns);
        ++waited;
        wait += (t.wait_end_ns - t.wait_start_ns) * 1e-6;
        busy.push_back({t.start_ns, t.wait_start_ns});
        busy.push_back({t.wait_end_ns, t.end_ns});
      } else {
        busy.push_back({t.start_ns, t.end_ns});
      }
    }
    // Each busy nanosecond is hidden when some compute op runs then: sweep the event points.
    for (auto [a, b] : busy) {
      std::vector<std::int64_t> cuts{a, b};
      for (auto [x, y] : compute)
        for (auto v : {x, y})
          if (v > a && v < b) cuts.push_back(v);
      std::sort(cuts.begin(), cuts.end());
      for (std::size_t i = 0; i + 1 < cuts.size(); ++i) {
        const auto mid2 = cuts[i] + cuts[i + 1];  // twice the midpoint: no rounding
        if (std::any_of(compute.begin(), compute.end(), [&](auto iv) { return 2 * iv.first <= mid2 && mid2 < 2 * iv.second; }))
          hidden += (cuts[i + 1] - cuts[i]) * 1e-6;
      }
    }
  }
  BOOST_TEST(waited > 0);  // ep = 2: every exchange waits for its peer at least a little
  const auto m = exec::measure_overlap(c.s.sched, *r, 0);
  BOOST_TEST(m.busy_ms + m.wait_ms == span, boost::test_tools::tolerance(1e-9));
  BOOST_TEST(m.wait_ms == wait, boost::test_tools::tolerance(1e-9));
  BOOST_TEST(m.hidden_ms == hidden, boost::test_tools::tolerance(1e-9));
  BOOST_TEST(m.pairs == pairs);
  BOOST_TEST(m.pair_busy_ms > 0);
  BOOST_TEST(m.pair_busy_ms <= m.busy_ms);
  BOOST_TEST(m.hidden_fraction() >= 0.0);
  BOOST_TEST(m.hidden_fraction() <= 1.0);

  BOOST_TEST_REQUIRE(exec::write_outputs(c.e, c.s.sched, *r).has_value());
  auto report = nlohmann::json::parse(read(fs::path(c.e.out_dir) / "report.json"));
  BOOST_TEST(report["measured"]["comm"]["busy"].get<double>() == m.busy_ms, boost::test_tools::tolerance(1e-9));
  BOOST_TEST(report["measured"]["comm"]["pair_hidden_fraction"].get<double>() == m.pair_hidden_fraction(),
             boost::test_tools::tolerance(1e-9));
  // The trace's comm lane shows the busy halves only (its times are microseconds).
  auto trace = nlohmann::json::parse(read(fs::path(c.e.out_dir) / "trace.json"));
  double drawn = 0;
  for (const auto& ev : trace["traceEvents"])
    if (ev.value("ph", "") == "X" && ev.value("tid", -1) == 2) drawn += ev["dur"].get<double>() * 1e-3;
  BOOST_TEST(drawn == m.busy_ms, boost::test_tools::tolerance(1e-3));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(runtime_failures)

// An error in a component ends the experiment with the rank, the op and the reason; the steps done
// before are kept for the partial report.
BOOST_AUTO_TEST_CASE(an_error_in_a_component_fails_the_experiment_cleanly) {
  auto c = prepare(experiment_text("1f1b", 4, 2, 2));
  exec::run_options opt;
  opt.fault = exec::injected_fault{5, actors::op_kind::mlp_b, 3, false};
  auto r = exec::run_experiment(c.e, c.s.sched, opt);
  BOOST_TEST_REQUIRE(r.has_value());
  BOOST_TEST(!r->ok);
  BOOST_TEST(r->error.find("rank 2 (ep 1)") != std::string::npos, r->error);
  BOOST_TEST(r->error.find("mlp_b") != std::string::npos, r->error);
  BOOST_TEST(r->error.find("microbatch 3") != std::string::npos, r->error);
  BOOST_TEST(r->error.find("injected fault") != std::string::npos, r->error);
  c.e.out_dir = (fs::temp_directory_path() / "loom-failed-run").string();
  BOOST_TEST(exec::write_outputs(c.e, c.s.sched, *r).has_value());
  auto report = nlohmann::json::parse(read(fs::path(c.e.out_dir) / "report.json"));
  BOOST_TEST(report["status"] == "failed");
  BOOST_TEST(report["error"].get<std::string>().find("injected fault") != std::string::npos);
}

// An op that never completes: the watchdog ends the experiment, naming what each rank waits for.
BOOST_AUTO_TEST_CASE(a_hang_is_ended_by_the_watchdog) {
  auto c = prepare(experiment_text("1f1b", 2, 1, 1), {"watchdog_seconds=0.5"});
  exec::run_options opt;
  opt.fault = exec::injected_fault{1, actors::op_kind::attn_f, 2, true};
  const auto t0 = std::chrono::steady_clock::now();
  auto r = exec::run_experiment(c.e, c.s.sched, opt);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  BOOST_TEST_REQUIRE(r.has_value());
  BOOST_TEST(!r->ok);
  BOOST_TEST(r->error.find("watchdog") != std::string::npos, r->error);
  BOOST_TEST(r->error.find("rank 1 at F0.2") != std::string::npos, r->error);
  BOOST_TEST(seconds < 10.0);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(experiment_files)

BOOST_AUTO_TEST_CASE(unknown_keys_and_bad_values_are_located) {
  auto unknown = dsl::parse_experiment(experiment_text("1f1b", 2, 1) + "\n[model]\n", "x.toml", ".");
  BOOST_TEST(!unknown.has_value());  // a second [model] table
  auto typo = dsl::parse_experiment("steps = 2\n[model]\nhiden = 64\n[schedule]\nfile = \"a.sched\"\n", "x.toml", ".");
  BOOST_TEST_REQUIRE(!typo.has_value());
  BOOST_TEST(typo.error().message.find("unknown key 'hiden'") != std::string::npos, typo.error().message);
  BOOST_TEST(typo.error().message.find("x.toml") != std::string::npos);
  auto type = dsl::parse_experiment("steps = \"two\"\n[schedule]\nfile = \"a.sched\"\n", "x.toml", ".");
  BOOST_TEST_REQUIRE(!type.has_value());
  BOOST_TEST(type.error().message.find("x.toml") != std::string::npos, type.error().message);
  auto syntax = dsl::parse_experiment("steps = = 2\n", "x.toml", ".");
  BOOST_TEST_REQUIRE(!syntax.has_value());
  BOOST_TEST(syntax.error().code == errc::parse_error);
}

BOOST_AUTO_TEST_CASE(impossible_shapes_are_refused_before_anything_runs) {
  auto heads = dsl::parse_experiment(experiment_text("1f1b", 2, 1), "x.toml", ".", {"model.heads=3"});
  BOOST_TEST_REQUIRE(!heads.has_value());
  BOOST_TEST(heads.error().message.find("not divisible by heads") != std::string::npos, heads.error().message);
  auto experts = dsl::parse_experiment(experiment_text("1f1b", 2, 1), "x.toml", ".", {"parallel.ep=3"});
  BOOST_TEST_REQUIRE(!experts.has_value());
  BOOST_TEST(experts.error().message.find("not divisible by ep") != std::string::npos, experts.error().message);
  // 6 layers do not split over the 4 stages of 1F1B on 4 ranks.
  auto c = prepare(experiment_text("1f1b", 4, 1), {"model.layers=6"});
  auto r = exec::run_experiment(c.e, c.s.sched);
  BOOST_TEST_REQUIRE(!r.has_value());
  BOOST_TEST(r.error().message.find("cannot be split over the 4 stages") != std::string::npos, r.error().message);
  // pp must agree with the schedule's ranks.
  auto mismatch = prepare(experiment_text("1f1b", 4, 1), {"schedule.ranks=2"});
  auto r2 = exec::run_experiment(mismatch.e, mismatch.s.sched);
  BOOST_TEST_REQUIRE(!r2.has_value());
  BOOST_TEST(r2.error().message.find("parallel.pp = 4") != std::string::npos, r2.error().message);
}

// The cuda backend's shape rules are checked before any GPU is touched, so they hold on any machine;
// without a usable GPU (or without CUDA in the build) a cuda run fails with the reason, never a crash.
BOOST_AUTO_TEST_CASE(the_cuda_backend_refuses_shapes_its_kernels_cannot_take) {
  auto odd_head = prepare(experiment_text("1f1b", 2, 1), {"backend=\"cuda\""});  // hidden 32 / 2 heads = 16
  auto r = exec::run_experiment(odd_head.e, odd_head.s.sched);
  BOOST_TEST_REQUIRE(!r.has_value());
  BOOST_TEST(r.error().message.find("model.hidden / model.heads = 64 or 128 (it is 16)") != std::string::npos,
             r.error().message);
  auto odd_ffn = prepare(experiment_text("1f1b", 2, 1), {"backend=\"cuda\"", "model.hidden=128", "model.expert_ffn=36"});
  auto r2 = exec::run_experiment(odd_ffn.e, odd_ffn.s.sched);
  BOOST_TEST_REQUIRE(!r2.has_value());
  BOOST_TEST(r2.error().message.find("model.expert_ffn to be a multiple of 8 (it is 36)") != std::string::npos,
             r2.error().message);
  if (!kernels::list_gpus()) {
    auto fits = prepare(experiment_text("1f1b", 2, 1), {"backend=\"cuda\"", "model.hidden=128"});
    auto r3 = exec::run_experiment(fits.e, fits.s.sched);
    BOOST_TEST_REQUIRE(!r3.has_value());
    BOOST_TEST(r3.error().code == errc::unavailable, r3.error().message);
  }
}

BOOST_AUTO_TEST_CASE(a_schedule_that_rejects_the_microbatch_count_is_refused) {
  auto e = dsl::parse_experiment(experiment_text("dualpipe", 4, 1), "x.toml", ".", {"schedule.microbatches=6"});
  BOOST_TEST_REQUIRE(e.has_value());
  dsl::load_request req;
  req.path = e->schedule_file;
  for (const auto& [k, v] : e->schedule_params) req.set[k] = v;
  auto s = dsl::load_schedule(req);
  BOOST_TEST_REQUIRE(!s.has_value());
  BOOST_TEST(s.error().message.find("at least twice the ranks") != std::string::npos, s.error().message);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(runtime_rebalancing)

// DeepSeek-V3-style redundant experts, re-planned from measured load while training runs: under a
// skewed router the token load per expert-parallel rank evens out, and the losses, gradients and
// weights stay those of the run without redundant experts (copies sum their gradients into their
// logical expert).
BOOST_AUTO_TEST_CASE(rebalancing_evens_the_load_and_changes_nothing_learned) {
  for (const std::string schedule : {"1f1b", "dualpipe"}) {
    BOOST_TEST_CONTEXT(schedule) {
      const std::vector<std::string> skew = {"model.router_skew=1.2", "model.shared_ffn=0", "steps=6"};
      auto plain = prepare(experiment_text(schedule, 4, 4), skew);
      auto extra = skew;
      for (const char* s : {"experts.redundant=4", "experts.replan_every=2", "experts.window=2"}) extra.push_back(s);
      auto balanced = prepare(experiment_text(schedule, 4, 4), extra);
      exec::run_options opt;
      opt.collect_tensors = true;
      auto a = exec::run_experiment(plain.e, plain.s.sched, opt);
      auto b = exec::run_experiment(balanced.e, balanced.s.sched, opt);
      BOOST_TEST_REQUIRE(a.has_value());
      BOOST_TEST_REQUIRE(b.has_value(), (b ? "" : b.error().message));
      BOOST_TEST_REQUIRE(a->ok, a->error);
      BOOST_TEST_REQUIRE(b->ok, b->error);
      for (std::size_t i = 0; i < a->loss.size(); ++i) BOOST_TEST(b->loss[i] == a->loss[i], boost::test_tools::tolerance(1e-5));
      for (const auto& [name, grad] : a->grads) {
        auto it = b->grads.find(name);
        BOOST_TEST_REQUIRE((it != b->grads.end()), name);
        BOOST_TEST(relative_difference(it->second, grad) < 1e-5, name);
        std::vector<double> va(a->values[name].begin(), a->values[name].end());
        std::vector<double> vb(b->values[name].begin(), b->values[name].end());
        BOOST_TEST(relative_difference(vb, va) < 1e-5, name);
      }
      // The placement was re-planned and experts moved.
      BOOST_TEST(b->replans.size() == 2u);  // after steps 1 and 3; not after the last
      int moved = 0;
      for (const auto& s : b->outcome.steps) moved += static_cast<int>(s.experts_moved);
      BOOST_TEST(moved > 0);
      for (const auto& rec : b->replans)
        for (std::size_t l = 0; l < rec.after.size(); ++l) BOOST_TEST(rec.after[l] <= rec.before[l] + 1e-12);
      // Heaviest rank / mean rank load of the expert slots, the last step against the plain run's.
      auto imbalance = [](const exec::run_result& r) {
        const auto& last = r.outcome.steps.back();
        double worst = 0;
        for (std::size_t g0 = 0; g0 < last.ranks.size(); g0 += r.ep) {
          double mx = 0, mean = 0;
          for (int q = 0; q < r.ep; ++q) {
            mx = std::max(mx, static_cast<double>(last.ranks[g0 + q].expert_rows));
            mean += static_cast<double>(last.ranks[g0 + q].expert_rows) / r.ep;
          }
          worst = std::max(worst, mx / mean);
        }
        return worst;
      };
      BOOST_TEST_MESSAGE(schedule << ": heaviest/mean expert load " << imbalance(*a) << " without, " << imbalance(*b) << " with");
      BOOST_TEST(imbalance(*b) < 0.75 * imbalance(*a));
      BOOST_TEST(imbalance(*b) < 1.25);
    }
  }
}

BOOST_AUTO_TEST_CASE(slots_that_do_not_divide_over_the_group_are_refused) {
  auto c = prepare(experiment_text("1f1b", 2, 4), {"experts.redundant=3"});
  auto r = exec::run_experiment(c.e, c.s.sched);
  BOOST_TEST_REQUIRE(!r.has_value());
  BOOST_TEST(r.error().message.find("do not divide over ep = 4") != std::string::npos, r.error().message);
}

BOOST_AUTO_TEST_SUITE_END()
