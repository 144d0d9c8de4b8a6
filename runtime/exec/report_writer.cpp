#include "runtime/exec/report_writer.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "runtime/exec/overlap_measure.hpp"
#include "runtime/report/chrome_trace.hpp"
#include "runtime/report/timeline_svg.hpp"

namespace loom::exec {

namespace {

using actors::op_kind;

bool is_component(op_kind k) { return k != op_kind::recv && k != op_kind::send; }

double ms(std::int64_t ns) { return static_cast<double>(ns) * 1e-6; }

// Union length of [start, end) intervals.
double union_ms(std::vector<std::pair<std::int64_t, std::int64_t>> iv) {
  std::sort(iv.begin(), iv.end());
  std::int64_t total = 0, cur_s = 0, cur_e = -1;
  for (auto [a, b] : iv) {
    if (b <= a) continue;
    if (a > cur_e) {
      if (cur_e > cur_s) total += cur_e - cur_s;
      cur_s = a;
      cur_e = b;
    } else {
      cur_e = std::max(cur_e, b);
    }
  }
  if (cur_e > cur_s) total += cur_e - cur_s;
  return ms(total);
}

const actors::rank_program& program_of(const run_result& r, int global_rank) { return r.lowered.ranks[global_rank / r.ep]; }

}  // namespace

measured_step measure_step(const run_result& r, int step) {
  measured_step m;
  const auto& so = r.outcome.steps.at(step);
  const int pp = static_cast<int>(r.lowered.ranks.size());
  m.busy_ms.assign(pp, 0);
  m.idle_ms.assign(pp, 0);
  for (std::size_t g = 0; g < so.ranks.size(); ++g) {
    const auto& rep = so.ranks[g];
    const auto& prog = program_of(r, static_cast<int>(g));
    std::vector<std::pair<std::int64_t, std::int64_t>> iv;
    std::int64_t last = 0;
    for (const auto& t : rep.ops) {
      if (!is_component(prog.ops[t.index].kind)) continue;
      iv.push_back({t.start_ns, t.end_ns});
      last = std::max(last, t.end_ns);
    }
    m.makespan_ms = std::max(m.makespan_ms, ms(last));
    const int p = static_cast<int>(g) / r.ep;
    m.busy_ms[p] = std::max(m.busy_ms[p], union_ms(std::move(iv)));
  }
  for (int p = 0; p < pp; ++p) m.idle_ms[p] = m.makespan_ms - m.busy_ms[p];
  return m;
}

report::timeline measured_timeline(const schedule::schedule& s, const run_result& r, int step, const std::string& title) {
  report::timeline t;
  t.title = title;
  t.unit = "ms";
  t.ranks = s.ranks();
  t.ep = r.ep;
  for (const auto& p : s.pipelines) t.pipelines.push_back(p.name);
  if (step < 0 || step >= static_cast<int>(r.outcome.steps.size())) return t;
  const auto& so = r.outcome.steps[step];
  for (std::size_t g = 0; g < so.ranks.size(); ++g) {
    const int rank = static_cast<int>(g) / r.ep;
    const auto& prog = program_of(r, static_cast<int>(g));
    std::vector<std::vector<const actors::op_timing*>> by_action(prog.action_ops.size());
    for (const auto& op : so.ranks[g].ops)
      if (is_component(prog.ops[op.index].kind)) by_action[prog.ops[op.index].action].push_back(&op);
    for (std::size_t a = 0; a < by_action.size(); ++a) {
      if (by_action[a].empty()) continue;
      report::timeline_event e;
      e.rank = rank;
      e.ep = static_cast<int>(g) % r.ep;
      e.action = s.programs[rank][a];
      auto ref = s.placement[rank][e.action.first.chunk];
      e.pipeline_first = ref.pipeline;
      e.stage_first = ref.stage;
      if (e.action.second) {
        auto ref2 = s.placement[rank][e.action.second->chunk];
        e.pipeline_second = ref2.pipeline;
        e.stage_second = ref2.stage;
      }
      // The action's cell covers its compute ops, as the pipeline pictures draw it; its communication
      // (which may start before, on the idle comm stream, or end after) shows as component spans.
      std::int64_t lo = INT64_MAX, hi = 0, lo_any = INT64_MAX, hi_any = 0;
      for (const auto* op : by_action[a]) {
        const auto& po = prog.ops[op->index];
        lo_any = std::min(lo_any, op->start_ns);
        hi_any = std::max(hi_any, op->end_ns);
        if (!actors::is_comm(po.kind)) {
          lo = std::min(lo, op->start_ns);
          hi = std::max(hi, op->end_ns);
        }
        const bool comm = actors::is_comm(po.kind);
        const char* name = actors::component_name(po.kind);
        if (comm && op->wait_end_ns > op->wait_start_ns && op->wait_start_ns >= op->start_ns && op->wait_end_ns <= op->end_ns) {
          // Its send half and its receive half: between them it only waits for the peers.
          e.components.push_back({ms(op->start_ns), ms(op->wait_start_ns), name, true, po.layer});
          e.components.push_back({ms(op->wait_end_ns), ms(op->end_ns), name, true, po.layer});
        } else {
          e.components.push_back({ms(op->start_ns), ms(op->end_ns), name, comm, po.layer});
        }
      }
      if (lo == INT64_MAX) {
        lo = lo_any;
        hi = hi_any;
      }
      e.start = ms(lo);
      e.end = ms(hi);
      t.events.push_back(std::move(e));
    }
  }
  return t;
}

prediction predict(const experiment& e, const schedule::schedule& s, const run_result& r) {
  prediction p;
  sim::component_costs c = e.costs;
  c.layers = r.layers_per_chunk;
  if (e.have_costs) {
    p.source = "costs table";
  } else {
    // The mean measured duration of each kind of op, over every rank and step.
    std::vector<double> sum(actors::op_kind_count, 0), count(actors::op_kind_count, 0);
    for (const auto& so : r.outcome.steps)
      for (std::size_t g = 0; g < so.ranks.size(); ++g) {
        const auto& prog = program_of(r, static_cast<int>(g));
        for (const auto& op : so.ranks[g].ops) {
          int k = static_cast<int>(prog.ops[op.index].kind);
          sum[k] += ms(op.end_ns - op.start_ns);
          count[k] += 1;
        }
      }
    auto mean = [&](op_kind k) {
      int i = static_cast<int>(k);
      return count[i] > 0 ? sum[i] / count[i] : 0.0;
    };
    // The embedding and head are folded into the attention and MLP of their layer.
    c.attn = mean(op_kind::attn_f);
    c.mlp = mean(op_kind::mlp_f);
    c.dispatch = mean(op_kind::dispatch_f);
    c.combine = mean(op_kind::combine_f);
    c.attn_b = mean(op_kind::attn_b);
    c.attn_w = mean(op_kind::attn_w);
    c.mlp_b = mean(op_kind::mlp_b);
    c.mlp_w = mean(op_kind::mlp_w);
    c.dispatch_b = mean(op_kind::dispatch_b);
    c.combine_b = mean(op_kind::combine_b);
    c.p2p = 0;
    p.source = "measured op times";
  }
  p.costs = c;
  p.result = sim::simulate_components(s, c);
  return p;
}

nlohmann::json make_report(const experiment& e, const schedule::schedule& s, const run_result& r, const prediction& p) {
  using nlohmann::json;
  json j;
  j["experiment"] = {{"name", e.name},
                     {"file", e.path},
                     {"backend", to_string(e.backend)},
                     {"seed", e.seed},
                     {"steps", e.steps},
                     {"microbatch_size", e.microbatch_size},
                     {"parallel", {{"pp", e.pp}, {"ep", e.ep}}},
                     {"model",
                      {{"hidden", e.model.hidden}, {"heads", e.model.heads}, {"layers", e.model.layers},
                       {"experts", e.model.experts}, {"top_k", e.model.top_k}, {"expert_ffn", e.model.expert_ffn},
                       {"shared_ffn", e.model.shared_ffn}, {"vocab", e.model.vocab}, {"seq_len", e.model.seq_len},
                       {"gating", e.model.gating == gating_kind::sigmoid ? "sigmoid" : "softmax"}}}};
  j["schedule"] = {{"file", e.schedule_file}, {"name", s.name}, {"params", s.params}, {"ranks", s.ranks()},
                   {"microbatches", s.total_microbatches()}};
  j["status"] = r.ok ? "ok" : "failed";
  if (!r.ok) j["error"] = r.error;
  j["loss"] = r.loss;
  j["grad_norm"] = r.grad_norm;
  j["wall_seconds"] = r.wall_seconds;

  json steps = json::array();
  for (std::size_t i = 0; i < r.outcome.steps.size(); ++i) {
    auto m = measure_step(r, static_cast<int>(i));
    steps.push_back({{"wall_ms", ms(r.outcome.steps[i].wall_ns)}, {"makespan_ms", m.makespan_ms}});
  }
  j["steps"] = steps;

  if (!r.outcome.steps.empty()) {
    const int last = static_cast<int>(r.outcome.steps.size()) - 1;
    auto m = measure_step(r, last);
    double idle_sum = 0;
    for (double v : m.idle_ms) idle_sum += v;
    j["measured"] = {{"step", last},
                     {"unit", "ms"},
                     {"makespan", m.makespan_ms},
                     {"busy", m.busy_ms},
                     {"idle", m.idle_ms},
                     {"bubble", m.idle_ms},
                     {"bubble_ratio", m.makespan_ms > 0 ? idle_sum / (m.makespan_ms * m.idle_ms.size()) : 0}};
    const auto o = measure_overlap(s, r, last);
    j["measured"]["comm"] = {{"busy", o.busy_ms},
                             {"wait", o.wait_ms},
                             {"hidden", o.hidden_ms},
                             {"hidden_fraction", o.hidden_fraction()},
                             {"pairs", o.pairs},
                             {"pair_busy", o.pair_busy_ms},
                             {"pair_wait", o.pair_wait_ms},
                             {"pair_hidden_fraction", o.pair_hidden_fraction()},
                             {"pair_span_hidden_fraction", o.pair_span_hidden_fraction()}};
    // Per-op timings: count, mean and total per kind of op, over all steps and ranks.
    std::map<std::string, std::pair<double, double>> per_kind;  // name -> (count, total ms)
    std::int64_t peak_any = 0;
    std::vector<std::int64_t> peak(s.ranks(), 0);
    for (const auto& so : r.outcome.steps)
      for (std::size_t g = 0; g < so.ranks.size(); ++g) {
        const auto& prog = program_of(r, static_cast<int>(g));
        for (const auto& op : so.ranks[g].ops) {
          auto& slot = per_kind[actors::to_string(prog.ops[op.index].kind)];
          slot.first += 1;
          slot.second += ms(op.end_ns - op.start_ns);
        }
        peak[g / r.ep] = std::max(peak[g / r.ep], so.ranks[g].peak_bytes);
        peak_any = std::max(peak_any, so.ranks[g].peak_bytes);
      }
    json ops = json::object();
    for (const auto& [name, v] : per_kind)
      ops[name] = {{"count", v.first}, {"total_ms", v.second}, {"mean_ms", v.first > 0 ? v.second / v.first : 0}};
    j["ops"] = ops;
    j["memory"] = {{"peak_activation_bytes", peak}, {"peak_activation_bytes_max", peak_any}};
  }
  // Expert load balance: per step, the heaviest expert-parallel rank over the mean (token copies its
  // expert slots processed), averaged over the pipeline stages; and each re-plan of the placement.
  {
    json per_step = json::array(), rows = json::array();
    for (const auto& so : r.outcome.steps) {
      json step_rows = json::array();
      for (const auto& rank : so.ranks) step_rows.push_back(rank.expert_rows);
      rows.push_back(step_rows);
      double sum = 0;
      int groups = 0;
      for (std::size_t g0 = 0; g0 + r.ep <= so.ranks.size(); g0 += r.ep) {
        double mx = 0, mean = 0;
        for (int q = 0; q < r.ep; ++q) {
          double rows = static_cast<double>(so.ranks[g0 + q].expert_rows);
          mx = std::max(mx, rows);
          mean += rows / r.ep;
        }
        if (mean > 0) {
          sum += mx / mean;
          ++groups;
        }
      }
      per_step.push_back(groups > 0 ? sum / groups : 1.0);
    }
    json replans = json::array();
    std::size_t k = 0;
    for (std::size_t i = 0; i < r.outcome.steps.size(); ++i) {
      const auto& so = r.outcome.steps[i];
      if (!so.migrated) continue;
      json rec{{"after_step", i},
               {"migration_ms", ms(so.migrate_ns)},
               {"bytes_moved", so.migrate_bytes},
               {"experts_moved", so.experts_moved}};
      while (k < r.replans.size() && r.replans[k].step < static_cast<int>(i)) ++k;
      if (k < r.replans.size() && r.replans[k].step == static_cast<int>(i)) {
        rec["imbalance_before"] = r.replans[k].before;
        rec["imbalance_after"] = r.replans[k].after;
      }
      replans.push_back(rec);
    }
    j["experts"] = {{"redundant", e.experts.redundant},
                    {"replan_every", e.experts.replan_every},
                    {"window", e.experts.window},
                    {"ep_load_imbalance", per_step},
                    {"rows_per_rank", rows},
                    {"replans", replans}};
  }
  const auto& pa = p.result.actions;
  j["predicted"] = {{"unit", "ms"},
                    {"source", p.source},
                    {"makespan", pa.makespan},
                    {"busy", pa.busy},
                    {"idle", pa.idle},
                    {"bubble", pa.idle},
                    {"bubble_ratio", pa.bubble_ratio},
                    {"peak_activations", pa.peak_activations},
                    {"comm_hidden_fraction", p.result.hidden_fraction()}};
  return j;
}

expected<void> write_outputs(const experiment& e, const schedule::schedule& s, const run_result& r) {
  std::error_code ec;
  std::filesystem::create_directories(e.out_dir, ec);
  if (ec) return unexpected(errc::io_error, e.out_dir + ": cannot create the output folder: " + ec.message());
  auto write = [&](const std::string& name, const std::string& text) -> expected<void> {
    const auto path = (std::filesystem::path(e.out_dir) / name).string();
    const auto tmp = path + ".tmp";
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      out << text;
      if (!out) return unexpected(errc::io_error, tmp + ": cannot write");
    }
    std::filesystem::rename(tmp, path, ec);  // readers never see half a file
    if (ec) return unexpected(errc::io_error, path + ": " + ec.message());
    return {};
  };
  const auto p = predict(e, s, r);
  if (auto ok = write("report.json", make_report(e, s, r, p).dump(1) + "\n"); !ok) return ok;

  // The trace holds every step, one after the other; the picture the last step.
  report::timeline all;
  all.title = s.name;
  all.unit = "ms";
  all.ranks = s.ranks();
  all.ep = r.ep;
  double offset = 0;
  for (std::size_t i = 0; i < r.outcome.steps.size(); ++i) {
    auto t = measured_timeline(s, r, static_cast<int>(i), s.name);
    for (auto& ev : t.events) {
      ev.start += offset;
      ev.end += offset;
      for (auto& c : ev.components) {
        c.start += offset;
        c.end += offset;
      }
      all.events.push_back(std::move(ev));
    }
    all.pipelines = t.pipelines;
    offset += ms(r.outcome.steps[i].wall_ns);
  }
  if (auto ok = write("trace.json", report::chrome_trace(all, 1000.0).dump() + "\n"); !ok) return ok;
  const int last = static_cast<int>(r.outcome.steps.size()) - 1;
  auto t = measured_timeline(s, r, last,
                             s.name + ", " + std::to_string(s.ranks()) + " ranks, " + std::to_string(s.total_microbatches()) +
                                 " microbatches (measured, step " + std::to_string(last) + ", " + to_string(e.backend) + ")");
  return write("timeline.svg", report::render_svg(t, {}));
}

}  // namespace loom::exec
