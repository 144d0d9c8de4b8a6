#include "runtime/sim/component_sim.hpp"

#include <algorithm>
#include <charconv>
#include <queue>
#include <string>

#include "runtime/schedule/dataflow.hpp"
#include "runtime/schedule/recipe.hpp"

namespace loom::sim {

using schedule::component;
using schedule::pair_side;
using schedule::phase;
using schedule::recipe_item;

expected<component_costs> parse_component_costs(std::string_view text, component_costs c) {
  struct field {
    const char* name;
    double* value;
  };
  const field fields[] = {{"attn", &c.attn},         {"dispatch", &c.dispatch},     {"mlp", &c.mlp},
                          {"combine", &c.combine},   {"attn.b", &c.attn_b},         {"attn.w", &c.attn_w},
                          {"mlp.b", &c.mlp_b},       {"mlp.w", &c.mlp_w},           {"dispatch.b", &c.dispatch_b},
                          {"combine.b", &c.combine_b}, {"p2p", &c.p2p}};
  while (!text.empty()) {
    auto comma = text.find(',');
    std::string_view item = text.substr(0, comma);
    text = comma == std::string_view::npos ? std::string_view{} : text.substr(comma + 1);
    auto eq = item.find('=');
    if (eq == std::string_view::npos)
      return unexpected(errc::invalid_argument, "component cost '" + std::string(item) + "' is not NAME=VALUE");
    std::string key(item.substr(0, eq)), value(item.substr(eq + 1));
    double v = 0;
    auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
    if (ec != std::errc() || ptr != value.data() + value.size() || !(v >= 0) || v > 1e12)
      return unexpected(errc::invalid_argument, "component cost " + key + "='" + value + "' is not a non-negative number");
    if (key == "layers" || key == "sms" || key == "comm_sms") {
      if (v != static_cast<int>(v) || v < 1 || v > 4096)
        return unexpected(errc::invalid_argument, key + " must be a whole number from 1 to 4096");
      (key == "layers" ? c.layers : key == "sms" ? c.sms_total : c.comm_sms) = static_cast<int>(v);
      continue;
    }
    auto it = std::find_if(std::begin(fields), std::end(fields), [&](const field& f) { return key == f.name; });
    if (it == std::end(fields))
      return unexpected(errc::invalid_argument, "unknown component cost '" + key +
                                                    "' (attn, dispatch, mlp, combine, attn.b, attn.w, mlp.b, mlp.w, "
                                                    "dispatch.b, combine.b, p2p, layers, sms, comm_sms)");
    *it->value = v;
  }
  if (c.comm_sms >= c.sms_total) return unexpected(errc::invalid_argument, "comm_sms must be below sms");
  return c;
}

action_costs implied_action_costs(const component_costs& c) {
  action_costs a;
  a.F = c.layers * (c.attn + c.mlp);
  a.W = c.layers * (c.attn_w + c.mlp_w);
  a.B = c.layers * (c.attn_b + c.mlp_b) + a.W;
  a.FB = a.F + a.B;
  a.FF = 2 * a.F;
  return a;
}

namespace {

enum stream_kind { compute_stream = 0, comm_stream = 1, link_only = 2 };

struct op {
  int rank = 0;
  int action = 0;
  int stream = compute_stream;
  double work = 0;
  int sms = 0;  // comm kernels: SMs taken from compute
  std::string name;
  int layer = 0;
  std::vector<int> dependents;
  int waiting = 0;  // unmet dependencies
  // progress
  double remaining = 0, rate = 1, updated = 0, start = -1, end = -1;
  int version = 0;
};

struct rank_state {
  std::vector<int> queue[2];
  std::size_t head[2] = {0, 0};
  int running[2] = {-1, -1};
  std::vector<int> sends;  // pipeline sends in flight
};

class engine {
 public:
  engine(const schedule::schedule& s, const component_costs& c) : s_(s), c_(c), table_(s), ranks_(s.ranks()) {}

  component_result run() {
    build();
    for (int r = 0; r < s_.ranks(); ++r) try_start(r);
    for (std::size_t i = 0; i < ops_.size(); ++i)
      if (ops_[i].stream == link_only && ops_[i].waiting == 0) start(static_cast<int>(i));
    while (!events_.empty()) {
      auto [time, id, version] = events_.top();
      events_.pop();
      op& o = ops_[id];
      if (o.end >= 0 || version != o.version) continue;
      now_ = -time;
      finish(id);
    }
    return collect();
  }

 private:
  // ---- building ---------------------------------------------------------------------------------
  int add(int rank, int action, int stream, double work, std::string name, int layer, int sms = 0) {
    op o;
    o.rank = rank;
    o.action = action;
    o.stream = stream;
    o.work = work;
    o.sms = sms;
    o.name = std::move(name);
    o.layer = layer;
    ops_.push_back(std::move(o));
    int id = static_cast<int>(ops_.size() - 1);
    if (stream != link_only) ranks_[rank].queue[stream].push_back(id);
    action_ops_[rank][action].push_back(id);
    return id;
  }
  void depend(int op_id, int on) {
    if (op_id == on) return;
    ops_[on].dependents.push_back(op_id);
    ++ops_[op_id].waiting;
  }

  // The ops of one layer of one step, keyed by recipe item index of the pair layout.
  struct layer_ops {
    int id[10];
    layer_ops() { std::fill(std::begin(id), std::end(id), -1); }
  };

  double item_cost(const recipe_item& it) const {
    if (it.side != pair_side::b) {
      switch (it.part) {
        case component::attn: return c_.attn;
        case component::dispatch: return c_.dispatch;
        case component::mlp: return c_.mlp;
        case component::combine: return c_.combine;
      }
    }
    switch (it.part) {
      case component::attn: return it.weight ? c_.attn_w : c_.attn_b;
      case component::dispatch: return c_.dispatch_b;
      case component::mlp: return it.weight ? c_.mlp_w : c_.mlp_b;
      case component::combine: return c_.combine_b;
    }
    return 0;
  }

  // Adds the components of one layer of a pair (or of a single step, with a one-sided recipe) in the
  // order of `streams`, wiring the recipe's dependencies and the links to the previous layer.
  // layer_of_side[side] is the layer that side works on, or -1 when the action has no such side.
  void add_layer(int r, int a, const std::vector<const schedule::recipe_stream*>& streams, bool forward_pair,
                 const std::vector<int>& layer_of_side, bool with_weight_parts, layer_ops& cur, const layer_ops* prev,
                 int comm_sms) {
    const auto& items = schedule::pair_items(forward_pair);
    for (const auto* st : streams) {
      for (const auto& it : st->order) {
        int idx = schedule::item_index(it, forward_pair);
        int layer = layer_of_side[static_cast<int>(it.side)];
        if (idx < 0 || layer < 0 || (it.weight && !with_weight_parts)) continue;
        bool comm = schedule::is_communication(it.part);
        cur.id[idx] = add(r, a, comm ? comm_stream : compute_stream, item_cost(it), schedule::to_string(it), layer,
                          comm ? comm_sms : 0);
      }
    }
    const auto& deps = schedule::recipe_dependencies(forward_pair);
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (cur.id[i] < 0) continue;
      for (int d : deps[i])
        if (cur.id[d] >= 0) depend(cur.id[i], cur.id[d]);
    }
    if (!prev) return;
    // Across layers: a forward layer starts from the previous layer's combine; a backward layer
    // from the previous (higher) layer's input-gradient attention.
    auto link = [&](int from_item, int to_item) {
      if (cur.id[to_item] >= 0 && prev->id[from_item] >= 0) depend(cur.id[to_item], prev->id[from_item]);
    };
    if (forward_pair) {
      link(3, 0);  // f.combine -> f.attn
      link(7, 4);  // f2.combine -> f2.attn
    } else {
      link(3, 0);  // f.combine -> f.attn
      link(8, 4);  // b.attn -> b.combine
    }
  }

  void build() {
    const int R = s_.ranks();
    action_ops_.resize(R);
    for (int r = 0; r < R; ++r) action_ops_[r].resize(s_.programs[r].size());

    const auto ds = schedule::deepseek_v3_recipe();
    const schedule::overlap_recipe& fb = s_.overlap ? *s_.overlap : ds;
    schedule::overlap_recipe ff_default;
    ff_default.name = "forward pairs";
    {
      using schedule::recipe_stream;
      auto item = [](pair_side side, component c) { return recipe_item{side, c, false, {}}; };
      ff_default.streams = {
          recipe_stream{"compute", 0, {item(pair_side::f, component::attn), item(pair_side::f2, component::attn),
                                       item(pair_side::f, component::mlp), item(pair_side::f2, component::mlp)}, {}},
          recipe_stream{"comm", c_.comm_sms, {item(pair_side::f, component::dispatch), item(pair_side::f2, component::dispatch),
                                              item(pair_side::f, component::combine), item(pair_side::f2, component::combine)}, {}}};
    }
    const schedule::overlap_recipe& ff = s_.forward_overlap ? *s_.forward_overlap : ff_default;

    auto streams_of = [](const schedule::overlap_recipe& r) {
      std::vector<const schedule::recipe_stream*> out;
      for (const auto& st : r.streams) out.push_back(&st);
      return out;
    };
    auto sms_of = [&](const schedule::overlap_recipe& r) {
      for (const auto& st : r.streams)
        if (st.name == "comm" && st.sms > 0) return st.sms;
      return c_.comm_sms;
    };
    // A single step runs its layers in plain order: written as a recipe of which it uses one side.
    schedule::overlap_recipe plain;
    {
      using schedule::recipe_stream;
      auto item = [](pair_side side, component c, bool w = false) { return recipe_item{side, c, w, {}}; };
      plain.streams = {
          recipe_stream{"compute", 0, {item(pair_side::f, component::attn), item(pair_side::f, component::mlp),
                                       item(pair_side::b, component::mlp), item(pair_side::b, component::mlp, true),
                                       item(pair_side::b, component::attn), item(pair_side::b, component::attn, true)}, {}},
          recipe_stream{"comm", c_.comm_sms, {item(pair_side::f, component::dispatch), item(pair_side::f, component::combine),
                                              item(pair_side::b, component::combine), item(pair_side::b, component::dispatch)}, {}}};
    }

    const int L = c_.layers;
    for (int r = 0; r < R; ++r) {
      const auto& prog = s_.programs[r];
      for (int a = 0; a < static_cast<int>(prog.size()); ++a) {
        const auto& act = prog[a];
        const step_kinds k = kinds(act);
        if (k.w_only) {
          // W: the weight parts of every layer, after the matching input parts of its I.
          auto i_pos = table_.backward(table_.stage_of(r, act.first.chunk).pipeline, table_.stage_of(r, act.first.chunk).stage,
                                       act.first.microbatch);
          for (int l = L - 1; l >= 0; --l) {
            int m = add(r, a, compute_stream, c_.mlp_w, "b.mlp.w", l);
            int at = add(r, a, compute_stream, c_.attn_w, "b.attn.w", l);
            depend(at, m);
            if (i_pos.found())
              for (int id : action_ops_[i_pos.rank][i_pos.index]) depend(m, id), depend(at, id);
          }
          continue;
        }
        const bool fpair = k.forward_pair;
        const schedule::overlap_recipe& recipe = k.pair ? (fpair ? ff : fb) : plain;
        const int comm_sms = sms_of(recipe);
        const auto streams = streams_of(recipe);
        layer_ops prev;
        for (int step = 0; step < L; ++step) {
          // side index: 0 = f, 1 = b, 2 = f2. Forward layers ascend, backward layers descend.
          std::vector<int> layer_of_side(3, -1);
          if (k.has_forward) layer_of_side[0] = step;
          if (k.has_backward) layer_of_side[1] = L - 1 - step;
          if (fpair) layer_of_side[2] = step;
          layer_ops cur;
          add_layer(r, a, streams, fpair, layer_of_side, k.full_backward, cur, step ? &prev : nullptr, comm_sms);
          prev = cur;
        }
      }
    }
    // Cross-rank and cross-action data dependencies.
    for (int r = 0; r < R; ++r) {
      const auto& prog = s_.programs[r];
      for (int a = 0; a < static_cast<int>(prog.size()); ++a) {
        auto wire = [&](const schedule::step& st) {
          if (st.kind == phase::W) return;
          if (st.kind != phase::F) {  // a backward needs its own forward's saved activations
            auto ref = table_.stage_of(r, st.chunk);
            auto f = table_.forward(ref.pipeline, ref.stage, st.microbatch);
            if (f.found() && !(f.rank == r && f.index == a))
              for (int id : action_ops_[r][a])
                for (int fid : action_ops_[f.rank][f.index]) depend(id, fid);
          }
          auto from = table_.input_producer(r, st);
          if (!from.found()) return;
          if (from.rank == r) {
            for (int id : action_ops_[r][a])
              for (int pid : action_ops_[r][from.index]) depend(id, pid);
            return;
          }
          int send = add(from.rank, from.index, link_only, c_.p2p, st.kind == phase::F ? "p2p.activation" : "p2p.gradient", 0);
          action_ops_[from.rank][from.index].pop_back();  // the send is not part of the producing action's span
          for (int pid : action_ops_[from.rank][from.index]) depend(send, pid);
          for (int id : action_ops_[r][a]) depend(id, send);
        };
        wire(prog[a].first);
        if (prog[a].second) wire(*prog[a].second);
      }
    }
  }

  struct step_kinds {
    bool pair = false, forward_pair = false, has_forward = false, has_backward = false, full_backward = false,
         w_only = false;
  };
  static step_kinds kinds(const schedule::action& a) {
    step_kinds k;
    auto note = [&](const schedule::step& st) {
      if (st.kind == phase::F) k.has_forward = true;
      if (st.kind == phase::B) k.has_backward = k.full_backward = true;
      if (st.kind == phase::I) k.has_backward = true;
    };
    note(a.first);
    if (a.second) {
      k.pair = true;
      k.forward_pair = a.second->kind == phase::F;
      if (!k.forward_pair) note(*a.second);
    }
    k.w_only = a.first.kind == phase::W;
    return k;
  }

  // ---- running ----------------------------------------------------------------------------------
  void try_start(int r) {
    rank_state& st = ranks_[r];
    for (int s = 0; s < 2; ++s) {
      if (st.running[s] >= 0 || st.head[s] >= st.queue[s].size()) continue;
      int id = st.queue[s][st.head[s]];
      if (ops_[id].waiting > 0) continue;
      ++st.head[s];
      st.running[s] = id;
      begin(id);
    }
    retime(r);
  }

  void start(int id) {  // a pipeline send
    ranks_[ops_[id].rank].sends.push_back(id);
    begin(id);
    retime(ops_[id].rank);
  }

  void begin(int id) {
    op& o = ops_[id];
    o.start = now_;
    o.updated = now_;
    o.remaining = o.work;
  }

  // Rates of everything running on rank r after a change: SM sharing and link sharing.
  void retime(int r) {
    rank_state& st = ranks_[r];
    auto settle = [&](int id) {
      op& o = ops_[id];
      o.remaining = std::max(0.0, o.remaining - o.rate * (now_ - o.updated));
      o.updated = now_;
    };
    if (st.running[0] >= 0) settle(st.running[0]);
    if (st.running[1] >= 0) settle(st.running[1]);
    for (int id : st.sends) settle(id);

    const int comm_id = st.running[1];
    const bool comm_active = comm_id >= 0 && ops_[comm_id].work > 0;
    const int transfers = (comm_active ? 1 : 0) + static_cast<int>(st.sends.size());
    auto schedule_end = [&](int id, double rate) {
      op& o = ops_[id];
      o.rate = rate;
      ++o.version;
      double t = o.remaining <= 0 ? now_ : now_ + o.remaining / rate;
      events_.push({-t, id, o.version});
    };
    if (st.running[0] >= 0) {
      double rate = comm_active ? double(c_.sms_total - ops_[comm_id].sms) / c_.sms_total : 1.0;
      schedule_end(st.running[0], rate);
    }
    if (comm_id >= 0) schedule_end(comm_id, 1.0 / std::max(1, transfers));
    for (int id : st.sends) schedule_end(id, 1.0 / std::max(1, transfers));
  }

  void finish(int id) {
    op& o = ops_[id];
    o.end = now_;
    rank_state& st = ranks_[o.rank];
    if (o.stream == link_only) st.sends.erase(std::find(st.sends.begin(), st.sends.end(), id));
    else st.running[o.stream] = -1;
    std::vector<int> touched{o.rank};
    for (int d : o.dependents) {
      if (--ops_[d].waiting > 0) continue;
      if (ops_[d].stream == link_only) start(d);
      else touched.push_back(ops_[d].rank);
    }
    std::sort(touched.begin(), touched.end());
    touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
    for (int r : touched) try_start(r);
  }

  component_result collect() {
    component_result out;
    const int R = s_.ranks();
    std::vector<std::vector<span>> spans(R);
    auto& t = out.actions;
    t.busy.assign(R, 0);
    t.idle.assign(R, 0);
    t.peak_activations.assign(R, 0);
    t.peak_deferred_weights.assign(R, 0);
    for (int r = 0; r < R; ++r) {
      spans[r].resize(s_.programs[r].size());
      for (std::size_t a = 0; a < spans[r].size(); ++a) {
        // An action starts with its first component that takes time (a free one may run ahead on
        // an idle stream without the action having begun) and ends with its last.
        double lo = 1e300, lo_any = 1e300, hi = 0;
        for (int id : action_ops_[r][a]) {
          if (ops_[id].start < 0) continue;
          lo_any = std::min(lo_any, ops_[id].start);
          if (ops_[id].work > 0) lo = std::min(lo, ops_[id].start);
          hi = std::max(hi, ops_[id].end);
        }
        if (lo == 1e300) lo = lo_any;
        if (lo > hi) lo = hi;
        spans[r][a] = {lo, hi};
        t.makespan = std::max(t.makespan, hi);
      }
    }
    // Busy time: the union of compute and comm kernel time per rank.
    for (int r = 0; r < R; ++r) {
      std::vector<std::pair<double, double>> compute, comm;
      for (const auto& o : ops_) {
        if (o.rank != r || o.start < 0 || o.end <= o.start) continue;
        if (o.stream == compute_stream) compute.push_back({o.start, o.end});
        if (o.stream == comm_stream) comm.push_back({o.start, o.end});
      }
      auto merged = merge(compute, comm);
      for (auto [a, b] : merged) t.busy[r] += b - a;
      for (auto [a, b] : comm) {
        out.comm_time += b - a;
        out.comm_hidden += overlap(a, b, compute);
      }
    }
    double idle_sum = 0;
    for (int r = 0; r < R; ++r) {
      t.idle[r] = t.makespan - t.busy[r];
      idle_sum += t.idle[r];
    }
    t.bubble_ratio = (R > 0 && t.makespan > 0) ? idle_sum / (R * t.makespan) : 0;
    // Activation counts follow the action order, as in the action-level simulator.
    auto counts = simulate_actions(s_, implied_action_costs(c_));
    t.peak_activations = counts.peak_activations;
    t.peak_deferred_weights = counts.peak_deferred_weights;
    t.spans = spans;

    out.picture = report::make_timeline(s_, spans, s_.name + " (component-level prediction)", "units");
    std::size_t e = 0;
    for (int r = 0; r < R; ++r)
      for (std::size_t a = 0; a < s_.programs[r].size(); ++a, ++e)
        for (int id : action_ops_[r][a]) {
          const op& o = ops_[id];
          if (o.start < 0 || o.stream == link_only) continue;
          out.picture.events[e].components.push_back({o.start, o.end, o.name, o.stream == comm_stream, o.layer});
        }
    return out;
  }

  static std::vector<std::pair<double, double>> merge(std::vector<std::pair<double, double>> a,
                                                      const std::vector<std::pair<double, double>>& b) {
    a.insert(a.end(), b.begin(), b.end());
    std::sort(a.begin(), a.end());
    std::vector<std::pair<double, double>> out;
    for (auto iv : a) {
      if (!out.empty() && iv.first <= out.back().second) out.back().second = std::max(out.back().second, iv.second);
      else out.push_back(iv);
    }
    return out;
  }
  static double overlap(double a, double b, const std::vector<std::pair<double, double>>& ivs) {
    double sum = 0;
    for (auto [x, y] : ivs) sum += std::max(0.0, std::min(b, y) - std::max(a, x));
    return sum;
  }

  const schedule::schedule& s_;
  const component_costs& c_;
  schedule::step_table table_;
  std::vector<rank_state> ranks_;
  std::vector<op> ops_;
  std::vector<std::vector<std::vector<int>>> action_ops_;
  std::priority_queue<std::tuple<double, int, int>> events_;  // (-time, op, version): earliest first
  double now_ = 0;
};

}  // namespace

component_result simulate_components(const schedule::schedule& s, const component_costs& costs) {
  return engine(s, costs).run();
}

}  // namespace loom::sim
