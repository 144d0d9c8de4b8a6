#include "runtime/lower/lowering.hpp"

#include <algorithm>

#include "runtime/schedule/dataflow.hpp"
#include "runtime/schedule/recipe.hpp"

namespace loom::lower {

using schedule::component;
using schedule::pair_side;
using schedule::phase;
using schedule::recipe_item;

namespace {

op_kind kind_of(const recipe_item& it) {
  if (it.side != pair_side::b) {
    switch (it.part) {
      case component::attn: return op_kind::attn_f;
      case component::dispatch: return op_kind::dispatch_f;
      case component::mlp: return op_kind::mlp_f;
      case component::combine: return op_kind::combine_f;
    }
  }
  switch (it.part) {
    case component::attn: return it.weight ? op_kind::attn_w : op_kind::attn_b;
    case component::dispatch: return op_kind::dispatch_b;
    case component::mlp: return it.weight ? op_kind::mlp_w : op_kind::mlp_b;
    case component::combine: return op_kind::combine_b;
  }
  return op_kind::attn_f;
}

// One forward layer and one backward layer in plain order, written as a recipe.
schedule::overlap_recipe plain_order(int comm_sms) {
  auto item = [](pair_side side, component c, bool w = false) { return recipe_item{side, c, w, {}}; };
  schedule::overlap_recipe r;
  r.name = "plain";
  r.streams = {
      {"compute", 0, {item(pair_side::f, component::attn), item(pair_side::f, component::mlp), item(pair_side::b, component::mlp),
                      item(pair_side::b, component::mlp, true), item(pair_side::b, component::attn),
                      item(pair_side::b, component::attn, true)}, {}},
      {"comm", comm_sms, {item(pair_side::f, component::dispatch), item(pair_side::f, component::combine),
                          item(pair_side::b, component::combine), item(pair_side::b, component::dispatch)}, {}}};
  return r;
}

// Two forwards overlapped, when a schedule pairs forwards without naming a recipe for them.
schedule::overlap_recipe forward_pair_default(int comm_sms) {
  auto item = [](pair_side side, component c) { return recipe_item{side, c, false, {}}; };
  schedule::overlap_recipe r;
  r.name = "forward pairs";
  r.streams = {{"compute", 0, {item(pair_side::f, component::attn), item(pair_side::f2, component::attn),
                               item(pair_side::f, component::mlp), item(pair_side::f2, component::mlp)}, {}},
               {"comm", comm_sms, {item(pair_side::f, component::dispatch), item(pair_side::f2, component::dispatch),
                                   item(pair_side::f, component::combine), item(pair_side::f2, component::combine)}, {}}};
  return r;
}

int sms_of(const schedule::overlap_recipe& r, int fallback) {
  for (const auto& st : r.streams)
    if (st.name == "comm" && st.sms > 0) return st.sms;
  return fallback;
}

class lowerer {
 public:
  lowerer(const schedule::schedule& s, const lowering_options& o) : s_(s), o_(o), table_(s) {}

  lowered_schedule run() {
    lowered_schedule out;
    out.layers = o_.layers;
    out.stages = schedule::logical_stages(s_);
    out.p2p = schedule::plan_p2p(s_, table_);
    out.ranks.resize(s_.ranks());
    fb_ = s_.overlap ? *s_.overlap : schedule::deepseek_v3_recipe();
    ff_ = s_.forward_overlap ? *s_.forward_overlap : forward_pair_default(o_.comm_sms);
    plain_ = plain_order(o_.comm_sms);
    for (int r = 0; r < s_.ranks(); ++r) lower_rank(r, out.ranks[r]);
    wire_messages(out);
    return out;
  }

 private:
  struct step_info {
    const schedule::step* st = nullptr;
    int stage = 0;
    bool first_stage = false, last_stage = false;
  };

  step_info info(int r, const schedule::step* st) const {
    step_info i;
    i.st = st;
    if (!st) return i;
    auto ref = table_.stage_of(r, st->chunk);
    i.stage = ref.stage;
    i.first_stage = ref.stage == 0;
    i.last_stage = ref.stage == table_.stages(ref.pipeline) - 1;
    return i;
  }

  int add(rank_ops& ro, int action, op_kind kind, const schedule::step& st, int layer, int sms = 0) {
    op o;
    o.kind = kind;
    o.on = is_comm(kind) ? stream::comm : stream::compute;
    o.action = action;
    o.chunk = st.chunk;
    o.layer = layer;
    o.microbatch = st.microbatch;
    o.sms = sms;
    ro.ops.push_back(std::move(o));
    int id = static_cast<int>(ro.ops.size() - 1);
    (is_comm(kind) ? ro.comm_queue : ro.compute_queue).push_back(id);
    ro.action_ops[action].push_back(id);
    return id;
  }
  static void dep(rank_ops& ro, int op_id, int on) {
    if (op_id >= 0 && on >= 0 && op_id != on) ro.ops[op_id].deps.push_back(on);
  }

  // Ops of one layer group keyed by recipe item index.
  struct group {
    int id[10];
    group() { std::fill(std::begin(id), std::end(id), -1); }
  };

  void lower_rank(int r, rank_ops& ro) {
    const auto& prog = s_.programs[r];
    ro.action_ops.resize(prog.size());
    ro.releases.resize(prog.size());
    const bool forward_only = s_.forward_only();
    for (int a = 0; a < static_cast<int>(prog.size()); ++a)
      for (const schedule::step* st : {&prog[a].first, prog[a].second ? &*prog[a].second : nullptr})
        if (st && (st->kind == phase::B || st->kind == phase::W || (forward_only && st->kind == phase::F)))
          ro.releases[a].push_back({st->chunk, st->microbatch});
    const int L = o_.layers;
    for (int a = 0; a < static_cast<int>(prog.size()); ++a) {
      const auto& act = prog[a];
      if (act.first.kind == phase::W) {
        lower_weight(r, ro, a, act.first);
        continue;
      }
      const bool pair = act.is_pair();
      const bool fpair = pair && act.second->kind == phase::F;
      // Sides: f = the forward, b = the backward, f2 = a second forward.
      const schedule::step* f = act.first.kind == phase::F ? &act.first : nullptr;
      const schedule::step* b = act.first.kind != phase::F ? &act.first : (pair && !fpair ? &*act.second : nullptr);
      const schedule::step* f2 = fpair ? &*act.second : nullptr;
      const step_info fi = info(r, f), bi = info(r, b), f2i = info(r, f2);
      const bool full_b = b && b->kind == phase::B;
      const schedule::overlap_recipe& recipe = pair ? (fpair ? ff_ : fb_) : plain_;
      const int sms = sms_of(recipe, o_.comm_sms);

      // Edge ops that open the action.
      int head_b = -1, embed_f = -1, embed_f2 = -1;
      if (b && bi.last_stage) {
        head_b = add(ro, a, op_kind::head_b, *b, 0);
        if (full_b) dep(ro, add(ro, a, op_kind::head_w, *b, 0), head_b);
      }
      if (f && fi.first_stage) embed_f = add(ro, a, op_kind::embed_f, *f, 0);
      if (f2 && f2i.first_stage) embed_f2 = add(ro, a, op_kind::embed_f, *f2, 0);

      group prev;
      for (int g = 0; g < L; ++g) {
        group cur;
        const int layer_of[3] = {f ? g : -1, b ? L - 1 - g : -1, f2 ? g : -1};
        const schedule::step* step_of[3] = {f, b, f2};
        for (const auto& st : recipe.streams)
          for (const auto& it : st.order) {
            const int side = static_cast<int>(it.side);
            const int idx = schedule::item_index(it, fpair);
            if (idx < 0 || layer_of[side] < 0 || (it.weight && !full_b)) continue;
            // Comm kernels keep to the recipe's SMs; inside a pair, compute leaves those SMs to them.
            const op_kind kind = kind_of(it);
            cur.id[idx] = add(ro, a, kind, *step_of[side], layer_of[side], is_comm(kind) || pair ? sms : 0);
          }
        const auto& deps = schedule::recipe_dependencies(fpair);
        for (int i = 0; i < 10; ++i)
          if (cur.id[i] >= 0)
            for (int d : deps[i]) dep(ro, cur.id[i], cur.id[d]);
        if (g == 0) {
          dep(ro, cur.id[0], embed_f);
          if (fpair) dep(ro, cur.id[4], embed_f2);
          else dep(ro, cur.id[4], head_b);  // the top backward layer starts from the head's gradient
        } else {
          dep(ro, cur.id[0], prev.id[3]);  // forward: the previous layer's combine
          if (fpair) dep(ro, cur.id[4], prev.id[7]);
          else dep(ro, cur.id[4], prev.id[8]);  // backward: the layer above's attention gradient
        }
        prev = cur;
      }
      // Edge ops that close the action.
      if (f && fi.last_stage) dep(ro, add(ro, a, op_kind::head_f, *f, 0), prev.id[3]);
      if (f2 && f2i.last_stage) dep(ro, add(ro, a, op_kind::head_f, *f2, 0), prev.id[7]);
      if (full_b && bi.first_stage) dep(ro, add(ro, a, op_kind::embed_w, *b, 0), prev.id[8]);
    }
    // An action's backward needs its forward's saved state; a W needs its I.
    for (int a = 0; a < static_cast<int>(prog.size()); ++a) {
      auto needs = [&](const schedule::step& st) {
        if (st.kind == phase::F) return;
        auto ref = table_.stage_of(r, st.chunk);
        auto before = st.kind == phase::W ? table_.backward(ref.pipeline, ref.stage, st.microbatch)
                                           : table_.forward(ref.pipeline, ref.stage, st.microbatch);
        if (!before.found() || before.rank != r || before.index == a) return;
        for (int id : ro.action_ops[a])
          for (int p : ro.action_ops[before.index]) dep(ro, id, p);
      };
      needs(prog[a].first);
      if (prog[a].second) needs(*prog[a].second);
    }
  }

  // W: the deferred weight parts of an I, layer by layer from the top, plus the head's and the
  // embedding's when the chunk holds the last or first stage.
  void lower_weight(int r, rank_ops& ro, int a, const schedule::step& st) {
    const step_info si = info(r, &st);
    if (si.last_stage) add(ro, a, op_kind::head_w, st, 0);
    for (int l = o_.layers - 1; l >= 0; --l) {
      add(ro, a, op_kind::mlp_w, st, l);
      add(ro, a, op_kind::attn_w, st, l);
    }
    if (si.first_stage) add(ro, a, op_kind::embed_w, st, 0);
  }

  static actors::tag message_tag(const schedule::p2p_message& m) {
    return {m.gradient ? actors::traffic::pipeline_gradient : actors::traffic::pipeline_activation,
            static_cast<std::uint16_t>(m.pipeline), static_cast<std::uint16_t>(m.from_stage), 0,
            static_cast<std::uint32_t>(m.microbatch)};
  }

  // Pipeline messages: a receive before the consuming action, a send after the producing one, and
  // plain dependencies between two chunks of one rank.
  void wire_messages(lowered_schedule& out) {
    // The local chunk of the step at one end of a message.
    auto chunk_at = [&](int r, int action, const schedule::p2p_message& m, bool consumer) {
      const auto& act = s_.programs[r][action];
      for (const schedule::step* st : {&act.first, act.second ? &*act.second : nullptr}) {
        if (!st || st->microbatch != m.microbatch || (st->kind == phase::F) == m.gradient) continue;
        auto ref = table_.stage_of(r, st->chunk);
        int want = consumer ? (m.gradient ? m.from_stage - 1 : m.from_stage + 1) : m.from_stage;
        if (ref.pipeline == m.pipeline && ref.stage == want) return st->chunk;
      }
      return act.first.chunk;
    };
    for (int id = 0; id < static_cast<int>(out.p2p.messages.size()); ++id) {
      const auto& m = out.p2p.messages[id];
      rank_ops& src = out.ranks[m.src];
      rank_ops& dst = out.ranks[m.dst];
      op send;
      send.kind = op_kind::send;
      send.on = stream::link;
      send.action = m.producer;
      send.chunk = chunk_at(m.src, m.producer, m, false);
      send.microbatch = m.microbatch;
      send.message = id;
      send.peer = m.dst;
      send.net_tag = message_tag(m);
      send.deps = src.action_ops[m.producer];
      src.ops.push_back(std::move(send));
      op recv;
      recv.kind = op_kind::recv;
      recv.on = stream::link;
      recv.action = m.consumer;
      recv.chunk = chunk_at(m.dst, m.consumer, m, true);
      recv.microbatch = m.microbatch;
      recv.message = id;
      recv.peer = m.src;
      recv.net_tag = message_tag(m);
      dst.ops.push_back(std::move(recv));
      const int rid = static_cast<int>(dst.ops.size() - 1);
      for (int o : dst.action_ops[m.consumer]) dst.ops[o].deps.push_back(rid);
    }
    for (int r = 0; r < s_.ranks(); ++r) {
      const auto& prog = s_.programs[r];
      rank_ops& ro = out.ranks[r];
      ro.handovers.resize(prog.size());
      for (int a = 0; a < static_cast<int>(prog.size()); ++a) {
        auto local = [&](const schedule::step& st) {
          auto from = table_.input_producer(r, st);
          if (!from.found() || from.rank != r) return;
          for (int o : ro.action_ops[a])
            for (int p : ro.action_ops[from.index]) dep(ro, o, p);
          // The producing step: the one of that action on the neighbouring stage.
          const auto& producer = prog[from.index];
          const auto want = table_.stage_of(r, st.chunk);
          const int to_stage = st.kind == phase::F ? want.stage - 1 : want.stage + 1;
          for (const schedule::step* p : {&producer.first, producer.second ? &*producer.second : nullptr})
            if (p && p->microbatch == st.microbatch && table_.stage_of(r, p->chunk).stage == to_stage &&
                (p->kind == phase::F) == (st.kind == phase::F))
              ro.handovers[from.index].push_back({p->chunk, st.chunk, st.microbatch, st.kind != phase::F});
        };
        local(prog[a].first);
        if (prog[a].second) local(*prog[a].second);
      }
    }
  }

  const schedule::schedule& s_;
  const lowering_options& o_;
  schedule::step_table table_;
  schedule::overlap_recipe fb_, ff_, plain_;
};

}  // namespace

lowered_schedule lower(const schedule::schedule& s, const lowering_options& opt) { return lowerer(s, opt).run(); }

}  // namespace loom::lower
