#include "runtime/sim/component_sim.hpp"

#include <algorithm>
#include <charconv>
#include <queue>
#include <string>

#include "runtime/lower/lowering.hpp"

namespace loom::sim {


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

// The fluid simulation of lowered operations: every rank's compute and comm streams run their
// queues in order, pipeline sends run on the sender's link, and rates change as work starts and ends.
class engine {
 public:
  engine(const schedule::schedule& s, const component_costs& c)
      : s_(s), c_(c), low_(lower::lower(s, {c.layers, c.comm_sms})), ranks_(s.ranks()) {}

  component_result run() {
    build();
    for (int r = 0; r < s_.ranks(); ++r) try_start(r);
    for (std::size_t i = 0; i < ops_.size(); ++i)
      if (ops_[i].link && ops_[i].waiting == 0 && ops_[i].start < 0) start_link(static_cast<int>(i));
    while (!events_.empty()) {
      auto [time, id, version] = events_.top();
      events_.pop();
      if (ops_[id].end >= 0 || version != ops_[id].version) continue;
      now_ = -time;
      finish(id);
    }
    return collect();
  }

 private:
  struct sim_op {
    int rank = 0;
    const lower::op* src = nullptr;
    bool link = false;
    double work = 0;
    std::vector<int> dependents;
    int waiting = 0;
    double remaining = 0, rate = 1, updated = 0, start = -1, end = -1;
    int version = 0;
  };
  struct rank_state {
    std::size_t head[2] = {0, 0};
    int running[2] = {-1, -1};
    std::vector<int> links;  // sends in flight
  };

  double cost(const lower::op& o) const {
    switch (o.kind) {
      case lower::op_kind::attn_f: return c_.attn;
      case lower::op_kind::dispatch_f: return c_.dispatch;
      case lower::op_kind::mlp_f: return c_.mlp;
      case lower::op_kind::combine_f: return c_.combine;
      case lower::op_kind::combine_b: return c_.combine_b;
      case lower::op_kind::mlp_b: return c_.mlp_b;
      case lower::op_kind::dispatch_b: return c_.dispatch_b;
      case lower::op_kind::attn_b: return c_.attn_b;
      case lower::op_kind::mlp_w: return c_.mlp_w;
      case lower::op_kind::attn_w: return c_.attn_w;
      case lower::op_kind::send: return c_.p2p;
      default: return 0;  // embedding, head and receives are folded into the costs above
    }
  }

  void build() {
    base_.resize(s_.ranks() + 1, 0);
    for (int r = 0; r < s_.ranks(); ++r) base_[r + 1] = base_[r] + static_cast<int>(low_.ranks[r].ops.size());
    ops_.resize(base_.back());
    std::vector<int> send_of(low_.p2p.messages.size(), -1);
    for (int r = 0; r < s_.ranks(); ++r)
      for (std::size_t i = 0; i < low_.ranks[r].ops.size(); ++i) {
        const lower::op& o = low_.ranks[r].ops[i];
        sim_op& so = ops_[base_[r] + i];
        so.rank = r;
        so.src = &o;
        so.link = o.on == lower::stream::link;
        so.work = cost(o);
        if (o.kind == lower::op_kind::send) send_of[o.message] = base_[r] + static_cast<int>(i);
      }
    for (int r = 0; r < s_.ranks(); ++r)
      for (std::size_t i = 0; i < low_.ranks[r].ops.size(); ++i) {
        const lower::op& o = low_.ranks[r].ops[i];
        const int id = base_[r] + static_cast<int>(i);
        for (int d : o.deps) depend(id, base_[r] + d);
        if (o.kind == lower::op_kind::recv) depend(id, send_of[o.message]);
      }
  }
  void depend(int id, int on) {
    ops_[on].dependents.push_back(id);
    ++ops_[id].waiting;
  }
  int queued(int r, int s, std::size_t k) const {
    const auto& q = s == 0 ? low_.ranks[r].compute_queue : low_.ranks[r].comm_queue;
    return k < q.size() ? base_[r] + q[k] : -1;
  }

  void try_start(int r) {
    rank_state& st = ranks_[r];
    for (int s = 0; s < 2; ++s) {
      if (st.running[s] >= 0) continue;
      int id = queued(r, s, st.head[s]);
      if (id < 0 || ops_[id].waiting > 0) continue;
      ++st.head[s];
      st.running[s] = id;
      begin(id);
    }
    retime(r);
  }
  void start_link(int id) {
    ranks_[ops_[id].rank].links.push_back(id);
    begin(id);
    retime(ops_[id].rank);
  }
  void begin(int id) {
    sim_op& o = ops_[id];
    o.start = o.updated = now_;
    o.remaining = o.work;
  }

  // SM sharing: compute slows while a communication kernel runs. Link sharing: concurrent transfers
  // (the comm stream's kernel and pipeline sends) split the rank's link.
  void retime(int r) {
    rank_state& st = ranks_[r];
    auto settle = [&](int id) {
      sim_op& o = ops_[id];
      o.remaining = std::max(0.0, o.remaining - o.rate * (now_ - o.updated));
      o.updated = now_;
    };
    if (st.running[0] >= 0) settle(st.running[0]);
    if (st.running[1] >= 0) settle(st.running[1]);
    for (int id : st.links) settle(id);
    const int comm = st.running[1];
    const bool comm_busy = comm >= 0 && ops_[comm].work > 0;
    int transfers = comm_busy ? 1 : 0;
    for (int id : st.links) transfers += ops_[id].work > 0;
    auto reschedule = [&](int id, double rate) {
      sim_op& o = ops_[id];
      o.rate = rate;
      ++o.version;
      events_.push({-(o.remaining <= 0 ? now_ : now_ + o.remaining / rate), id, o.version});
    };
    if (st.running[0] >= 0)
      reschedule(st.running[0], comm_busy ? double(c_.sms_total - ops_[comm].src->sms) / c_.sms_total : 1.0);
    if (comm >= 0) reschedule(comm, 1.0 / std::max(1, transfers));
    for (int id : st.links) reschedule(id, 1.0 / std::max(1, transfers));
  }

  void finish(int id) {
    sim_op& o = ops_[id];
    o.end = now_;
    rank_state& st = ranks_[o.rank];
    if (o.link) {
      auto it = std::find(st.links.begin(), st.links.end(), id);
      if (it != st.links.end()) st.links.erase(it);
    } else {
      st.running[o.src->on == lower::stream::comm ? 1 : 0] = -1;
    }
    std::vector<int> touched{o.rank};
    for (int d : o.dependents) {
      if (--ops_[d].waiting > 0) continue;
      if (ops_[d].link) start_link(d);  // a send, or a receive whose data has arrived (no work)
      else touched.push_back(ops_[d].rank);
    }
    std::sort(touched.begin(), touched.end());
    touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
    for (int r : touched) try_start(r);
  }

  component_result collect() {
    component_result out;
    const int R = s_.ranks();
    auto& t = out.actions;
    t.busy.assign(R, 0);
    t.idle.assign(R, 0);
    t.spans.resize(R);
    for (int r = 0; r < R; ++r) {
      const auto& ro = low_.ranks[r];
      t.spans[r].resize(s_.programs[r].size());
      for (std::size_t a = 0; a < ro.action_ops.size(); ++a) {
        // An action starts with its first component that takes time (a free one may run ahead on an
        // idle stream before the action has begun) and ends with its last.
        double lo = 1e300, lo_any = 1e300, hi = 0;
        for (int i : ro.action_ops[a]) {
          const sim_op& o = ops_[base_[r] + i];
          if (o.start < 0) continue;
          lo_any = std::min(lo_any, o.start);
          if (o.work > 0) lo = std::min(lo, o.start);
          hi = std::max(hi, o.end);
        }
        if (lo == 1e300) lo = lo_any;
        if (lo > hi) lo = hi;
        t.spans[r][a] = {lo, hi};
        t.makespan = std::max(t.makespan, hi);
      }
      std::vector<std::pair<double, double>> compute, comm;
      for (std::size_t i = 0; i < ro.ops.size(); ++i) {
        const sim_op& o = ops_[base_[r] + i];
        if (o.start < 0 || o.end <= o.start || o.link) continue;
        (o.src->on == lower::stream::comm ? comm : compute).push_back({o.start, o.end});
      }
      for (auto [a, b] : merge(compute, comm)) t.busy[r] += b - a;
      for (auto [a, b] : comm) {
        out.comm_time += b - a;
        out.comm_hidden += overlap(a, b, compute);
      }
    }
    double idle_sum = 0;
    for (int r = 0; r < R; ++r) idle_sum += (t.idle[r] = t.makespan - t.busy[r]);
    t.bubble_ratio = (R > 0 && t.makespan > 0) ? idle_sum / (R * t.makespan) : 0;
    auto counts = simulate_actions(s_, implied_action_costs(c_));  // activation counts follow the action order
    t.peak_activations = counts.peak_activations;
    t.peak_deferred_weights = counts.peak_deferred_weights;

    out.picture = report::make_timeline(s_, t.spans, s_.name + " (component-level prediction)", "units");
    std::size_t e = 0;
    for (int r = 0; r < R; ++r)
      for (std::size_t a = 0; a < s_.programs[r].size(); ++a, ++e)
        for (int i : low_.ranks[r].action_ops[a]) {
          const sim_op& o = ops_[base_[r] + i];
          if (o.start < 0 || o.work <= 0) continue;
          out.picture.events[e].components.push_back(
              {o.start, o.end, actors::component_name(o.src->kind), o.src->on == lower::stream::comm, o.src->layer});
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
  lower::lowered_schedule low_;
  std::vector<rank_state> ranks_;
  std::vector<sim_op> ops_;
  std::vector<int> base_;
  std::priority_queue<std::tuple<double, int, int>> events_;  // (-time, op, version): earliest first
  double now_ = 0;
};

}  // namespace

component_result simulate_components(const schedule::schedule& s, const component_costs& costs) {
  return engine(s, costs).run();
}

}  // namespace loom::sim
