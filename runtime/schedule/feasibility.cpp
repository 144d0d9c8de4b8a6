#include "runtime/schedule/feasibility.hpp"

#include <deque>
#include <map>
#include <tuple>

#include "runtime/schedule/validate.hpp"

namespace loom::schedule {

namespace {

// The consumer of a step's output on the neighbouring stage, or none at the pipeline's ends.
action_pos output_consumer(const step_table& t, stage_ref ref, const step& st) {
  if (st.kind == phase::F)
    return ref.stage + 1 < t.stages(ref.pipeline) ? t.forward(ref.pipeline, ref.stage + 1, st.microbatch) : action_pos{};
  if (st.kind == phase::B || st.kind == phase::I)
    return ref.stage > 0 ? t.backward(ref.pipeline, ref.stage - 1, st.microbatch) : action_pos{};
  return {};
}

}  // namespace

std::string describe(const schedule& s, const p2p_message& m) {
  const auto& name = s.pipelines[m.pipeline].name;
  int to_stage = m.gradient ? m.from_stage - 1 : m.from_stage + 1;
  return std::string(m.gradient ? "the gradient " : "the activation ") + name + "[" + std::to_string(m.from_stage) +
         "]->" + name + "[" + std::to_string(to_stage) + "] of microbatch " + std::to_string(m.microbatch);
}

p2p_plan plan_p2p(const schedule& s, const step_table& table) {
  p2p_plan plan;
  const int R = s.ranks();
  plan.send_begin.resize(R);
  plan.recv_begin.resize(R);
  plan.recv_ids.resize(R);
  for (int r = 0; r < R; ++r) plan.recv_begin[r].assign(s.programs[r].size() + 1, 0);
  std::map<std::tuple<int, int, int, bool>, int> channel_of;
  for (int r = 0; r < R; ++r) {
    const auto& prog = s.programs[r];
    plan.send_begin[r].resize(prog.size() + 1);
    for (int i = 0; i < static_cast<int>(prog.size()); ++i) {
      plan.send_begin[r][i] = static_cast<int>(plan.messages.size());
      auto add = [&](const step& st) {
        stage_ref ref = table.stage_of(r, st.chunk);
        auto to = output_consumer(table, ref, st);
        if (!to.found() || to.rank == r) return;
        bool grad = st.kind != phase::F;
        auto [it, fresh] = channel_of.try_emplace({r, to.rank, ref.pipeline, grad}, static_cast<int>(plan.channels.size()));
        if (fresh) plan.channels.push_back({r, to.rank, ref.pipeline, grad, {}});
        auto& ch = plan.channels[it->second];
        int id = static_cast<int>(plan.messages.size());
        plan.messages.push_back({grad, ref.pipeline, ref.stage, st.microbatch, r, to.rank, i, to.index, it->second,
                                 static_cast<int>(ch.messages.size())});
        ch.messages.push_back(id);
        ++plan.recv_begin[to.rank][to.index + 1];
      };
      add(prog[i].first);
      if (prog[i].second) add(*prog[i].second);
    }
    plan.send_begin[r][prog.size()] = static_cast<int>(plan.messages.size());
  }
  // Receives by consumer: a counting sort (messages of one action stay in sending order).
  for (int r = 0; r < R; ++r) {
    auto& begin = plan.recv_begin[r];
    for (std::size_t a = 1; a < begin.size(); ++a) begin[a] += begin[a - 1];
    plan.recv_ids[r].resize(begin.back());
  }
  std::vector<std::vector<int>> fill(R);
  for (int r = 0; r < R; ++r) fill[r].assign(plan.recv_begin[r].begin(), plan.recv_begin[r].end() - 1);
  for (int id = 0; id < static_cast<int>(plan.messages.size()); ++id) {
    const auto& m = plan.messages[id];
    plan.recv_ids[m.dst][fill[m.dst][m.consumer]++] = id;
  }
  return plan;
}

namespace {

// A dependency on another chunk of the same rank must be met by an earlier action.
void check_local_order(const schedule& s, const step_table& table, diagnostic_list& diags) {
  for (int r = 0; r < s.ranks() && !diags.full(); ++r) {
    const auto& prog = s.programs[r];
    for (int i = 0; i < static_cast<int>(prog.size()); ++i) {
      auto check = [&](const step& st) {
        auto from = table.input_producer(r, st);
        if (!from.found() || from.rank != r || from.index < i) return;
        auto& d = diags.error(prog[i].where, "rank " + std::to_string(r) + " runs " + to_string(st) +
                                                 " before the action on the same rank that produces its input");
        d.notes.push_back({severity::note, prog[from.index].where,
                           "the input comes from " + to_string(prog[from.index]) + " here", {}});
      };
      check(prog[i].first);
      if (prog[i].second) check(*prog[i].second);
    }
  }
}

// A channel must be consumed in the order it is produced.
void check_channel_order(const schedule& s, const p2p_plan& plan, diagnostic_list& diags) {
  for (const auto& ch : plan.channels) {
    for (std::size_t k = 1; k < ch.messages.size() && !diags.full(); ++k) {
      const p2p_message& before = plan.messages[ch.messages[k - 1]];
      const p2p_message& after = plan.messages[ch.messages[k]];
      if (after.consumer >= before.consumer) continue;  // one action may take two in a row (an F&F pair)
      auto& d = diags.error(s.programs[ch.dst][after.consumer].where,
                            "rank " + std::to_string(ch.dst) + " needs " + describe(s, after) + " before " +
                                describe(s, before) + ", but rank " + std::to_string(ch.src) +
                                " sends them the other way round; messages between two stages arrive in order");
      d.notes.push_back({severity::note, s.programs[ch.src][before.producer].where,
                         "rank " + std::to_string(ch.src) + " sends " + describe(s, before) + " after " +
                             to_string(s.programs[ch.src][before.producer]),
                         {}});
    }
  }
}

}  // namespace

void check_feasible(const schedule& s, diagnostic_list& diags) {
  step_table table(s);
  check_local_order(s, table, diags);
  if (diags.has_errors()) return;
  p2p_plan plan = plan_p2p(s, table);
  check_channel_order(s, plan, diags);
  if (diags.has_errors()) return;

  // The receive of a message is posted when the receiver starts the action consuming the channel's
  // previous message; messages consumed by one action are posted together. gate[m]: that action.
  std::vector<int> gate(plan.messages.size(), -1);
  for (const auto& ch : plan.channels)
    for (std::size_t k = 1; k < ch.messages.size(); ++k) {
      const p2p_message& prev = plan.messages[ch.messages[k - 1]];
      const p2p_message& cur = plan.messages[ch.messages[k]];
      gate[ch.messages[k]] = prev.consumer < cur.consumer ? prev.consumer : gate[ch.messages[k - 1]];
    }
  const int n = s.ranks();
  std::vector<int> next(n, 0);
  // What holds rank r before its next action: the message it cannot yet deliver or receive (-1: none).
  auto blocker = [&](int r) -> int {
    const int i = next[r];
    if (i > 0)
      for (auto [id, end] = plan.sends(r, i - 1); id < end; ++id) {
        const p2p_message& m = plan.messages[id];
        if (gate[id] >= 0 && next[m.dst] <= gate[id]) return id;  // receive not posted yet
      }
    if (i < static_cast<int>(s.programs[r].size()))
      for (int id : plan.receives(r, i))
        if (next[plan.messages[id].src] <= plan.messages[id].producer) return id;  // not produced yet
    return -1;
  };
  auto finished = [&](int r) { return next[r] > static_cast<int>(s.programs[r].size()); };
  auto waits_on = [&](int r, int id) {
    const p2p_message& m = plan.messages[id];
    return m.src == r ? m.dst : m.src;
  };

  std::vector<std::vector<int>> waiters(n);
  std::deque<int> work;
  for (int r = 0; r < n; ++r) work.push_back(r);
  while (!work.empty()) {
    int r = work.front();
    work.pop_front();
    bool moved = false;
    while (!finished(r)) {
      int id = blocker(r);
      if (id >= 0) {
        waiters[waits_on(r, id)].push_back(r);
        break;
      }
      ++next[r];  // runs action next[r] (or, past the end, completes the last sends)
      moved = true;
    }
    if (moved) {
      for (int w : waiters[r]) work.push_back(w);
      waiters[r].clear();
    }
  }

  int start = -1;
  for (int r = 0; r < n && start < 0; ++r)
    if (!finished(r)) start = r;
  if (start < 0) return;

  auto explain = [&](int r, std::string& why) -> source_loc {
    const int id = blocker(r);
    const p2p_message& m = plan.messages[id];
    const auto& prog = s.programs[r];
    if (m.src == r) {
      why = "rank " + std::to_string(r) + " cannot finish sending " + describe(s, m) + " (after " +
            to_string(prog[m.producer]) + "): rank " + std::to_string(m.dst) + " posts that receive only when it starts " +
            to_string(s.programs[m.dst][gate[id]]) + ", the consumer of the channel's previous message";
      return prog[m.producer].where;
    }
    why = "rank " + std::to_string(r) + " cannot start " + to_string(prog[next[r]]) + ": it waits for " + describe(s, m) +
          ", which rank " + std::to_string(m.src) + " sends after " + to_string(s.programs[m.src][m.producer]);
    return prog[next[r]].where;
  };

  std::vector<int> seen_at(n, -1);
  std::vector<int> path;
  int r = start;
  while (seen_at[r] < 0) {
    seen_at[r] = static_cast<int>(path.size());
    path.push_back(r);
    r = waits_on(r, blocker(r));
  }
  std::vector<int> cycle(path.begin() + seen_at[r], path.end());
  std::string chain;
  for (int c : cycle) chain += "rank " + std::to_string(c) + " -> ";
  chain += "rank " + std::to_string(cycle.front());
  std::string why;
  source_loc where = explain(cycle.front(), why);
  auto& d = diags.error(where, "the schedule deadlocks when sends and receives block as NCCL's do; wait-for cycle: " + chain);
  for (int c : cycle) {
    std::string text;
    source_loc at = explain(c, text);
    d.notes.push_back({severity::note, at, std::move(text), {}});
  }
}

}  // namespace loom::schedule
