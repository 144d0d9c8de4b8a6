#include "kernels/model/moe_block.hpp"

#include <algorithm>
#include <cassert>
#include <cmath>

#include "kernels/cpu/attention.hpp"
#include "kernels/cpu/gemm.hpp"
#include "kernels/cpu/rmsnorm.hpp"
#include "kernels/cpu/router.hpp"
#include "kernels/cpu/swiglu.hpp"

namespace loom::model {

namespace cpu = kernels::cpu;

namespace {

std::size_t n_of(int a, int b) { return static_cast<std::size_t>(a) * static_cast<std::size_t>(b); }

// C[m, n] = A[m, k] B[k, n] (+ C when accumulate).
void matmul(const float* a, const float* b, float* c, int m, int k, int n, bool accumulate = false) {
  cpu::gemm(false, false, m, n, k, 1.f, a, k, b, n, accumulate ? 1.f : 0.f, c, n);
}
// C[m, n] = A[m, k] B[n, k]^T (+ C).
void matmul_bt(const float* a, const float* b, float* c, int m, int k, int n, bool accumulate = false) {
  cpu::gemm(false, true, m, n, k, 1.f, a, k, b, k, accumulate ? 1.f : 0.f, c, n);
}

// grad(W[in, out]) += A[rows, in]^T B[rows, out], summed in float for this microbatch and added in
// double, so the step's total does not depend on the order microbatches arrive in.
void add_weight_grad(param& w, const float* a, const float* b, int rows, int in, int out, std::vector<float>& scratch) {
  scratch.resize(n_of(in, out));
  cpu::gemm(true, false, in, out, rows, 1.f, a, in, b, out, 0.f, scratch.data(), out);
  for (std::size_t i = 0; i < scratch.size(); ++i) w.grad[i] += scratch[i];
}

void add_scratch(param& w, const std::vector<float>& scratch) {
  for (std::size_t i = 0; i < scratch.size(); ++i) w.grad[i] += scratch[i];
}

// Gumbel(0, 1) noise from (seed, token, expert): -ln(-ln(u)), u uniform in (0, 1).
float gumbel(std::uint64_t seed, std::uint64_t token, std::uint64_t expert) {
  std::uint64_t x = seed ^ (token * 0x9e3779b97f4a7c15ull) ^ (expert * 0xc2b2ae3d27d4eb4full);
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  x ^= x >> 31;
  const double u = (static_cast<double>(x >> 11) + 0.5) * (1.0 / 9007199254740992.0);
  return static_cast<float>(-std::log(-std::log(u)));
}

cpu::attention_shape attn_shape(const layer_ctx& c) {
  const auto& m = *c.shape;
  return {c.seqs, m.seq_len, m.heads, m.head_dim(), 1.f / std::sqrt(static_cast<float>(m.head_dim()))};
}

cpu::gating gate_of(const model_shape& m) {
  return m.gate == gating::sigmoid ? cpu::gating::sigmoid : cpu::gating::softmax;
}

cpu::swiglu_weights expert_weights(const layer_ctx& c, int local_expert) {
  const auto& ls = c.params->layer(c.local_layer);
  return {c.params->at(ls.expert_w1[local_expert]).value.data(), c.params->at(ls.expert_w3[local_expert]).value.data(),
          c.params->at(ls.expert_w2[local_expert]).value.data()};
}

// Rows of `rows` for (source, local expert) ranges in source order: what goes back to one source.
block gather_for_source(const layer_ctx& c, const expert_batch& in, const buffer& rows, int source) {
  const int d = c.shape->hidden;
  const int local = c.local_slots();
  block b;
  std::size_t n = 0;
  for (int j = 0; j < local; ++j) n += in.counts_from[source][j];
  b.rows.resize(n * d);
  std::size_t at = 0;
  for (int j = 0; j < local; ++j) {
    const int start = in.source_offsets[n_of(source, local) + j];
    const int count = in.counts_from[source][j];
    std::copy_n(rows.data() + n_of(start, d), n_of(count, d), b.rows.data() + n_of(static_cast<int>(at), d));
    at += count;
  }
  return b;
}

// Owner side: place a source's rows (ordered by local expert) into the grouped layout.
void scatter_from_source(const layer_ctx& c, const expert_batch& in, const buffer& src_rows, int source, buffer& rows) {
  const int d = c.shape->hidden;
  const int local = c.local_slots();
  std::size_t at = 0;
  for (int j = 0; j < local; ++j) {
    const int start = in.source_offsets[n_of(source, local) + j];
    const int count = in.counts_from[source][j];
    std::copy_n(src_rows.data() + n_of(static_cast<int>(at), d), n_of(count, d), rows.data() + n_of(start, d));
    at += count;
  }
}

// Source side: one block per owner rank, cut from rows in plan order.
std::vector<block> split_by_owner(const layer_ctx& c, const layer_state& s, const buffer& rows) {
  const int d = c.shape->hidden;
  std::vector<block> out(c.ep.ep);
  for (int q = 0; q < c.ep.ep; ++q) {
    const int begin = s.send_offsets[q], end = s.send_offsets[q + 1];
    out[q].rows.assign(rows.begin() + n_of(begin, d), rows.begin() + n_of(end, d));
  }
  return out;
}

// Source side: concatenate the owners' blocks back into plan order.
buffer join_from_owners(const layer_ctx& c, const layer_state& s, std::vector<block>& from) {
  const int d = c.shape->hidden;
  buffer rows(n_of(static_cast<int>(s.plan.token.size()), d));
  for (int q = 0; q < c.ep.ep; ++q) {
    const std::size_t expect = n_of(s.send_offsets[q + 1] - s.send_offsets[q], d);
    assert(from[q].rows.size() == expect);
    std::copy_n(from[q].rows.data(), std::min(expect, from[q].rows.size()), rows.data() + n_of(s.send_offsets[q], d));
  }
  return rows;
}

}  // namespace

void attention_forward(const layer_ctx& c, layer_state& s) {
  const auto& m = *c.shape;
  const auto& ls = c.params->layer(c.local_layer);
  const auto& P = *c.params;
  const int T = c.tokens(), d = m.hidden, E = m.experts, k = m.top_k;
  s.ln1.resize(n_of(T, d));
  s.inv1.resize(T);
  cpu::rmsnorm_forward(s.x.data(), P.at(ls.norm1).value.data(), s.ln1.data(), s.inv1.data(), T, d, m.norm_eps);
  s.qkv.resize(n_of(T, 3 * d));
  matmul(s.ln1.data(), P.at(ls.wqkv).value.data(), s.qkv.data(), T, d, 3 * d);
  s.ctx.resize(n_of(T, d));
  s.lse.resize(n_of(c.seqs * m.heads, m.seq_len));
  cpu::attention_forward(attn_shape(c), s.qkv.data(), s.qkv.data() + d, s.qkv.data() + 2 * d, 3 * d, s.ctx.data(), d,
                         s.lse.data());
  s.h = s.x;
  matmul(s.ctx.data(), P.at(ls.wo).value.data(), s.h.data(), T, d, d, /*accumulate=*/true);
  s.u.resize(n_of(T, d));
  s.inv2.resize(T);
  cpu::rmsnorm_forward(s.h.data(), P.at(ls.norm2).value.data(), s.u.data(), s.inv2.data(), T, d, m.norm_eps);
  buffer logits(n_of(T, E));
  matmul(s.u.data(), P.at(ls.router).value.data(), logits.data(), T, d, E);
  if (m.router_skew != 0.f)
    for (int t = 0; t < T; ++t)
      for (int e = 0; e < E; ++e)
        logits[n_of(t, E) + e] += -m.router_skew * std::log(static_cast<float>(e + 1)) +
                                  gumbel(c.token_seed, static_cast<std::uint64_t>(c.first_token + t), static_cast<std::uint64_t>(e));
  s.scores.resize(n_of(T, E));
  s.topk_idx.resize(n_of(T, k));
  s.topk_w.resize(n_of(T, k));
  const float* bias = m.gate == gating::sigmoid ? P.at(ls.router_bias).value.data() : nullptr;
  cpu::router_forward(gate_of(m), logits.data(), bias, T, E, k, s.topk_idx.data(), s.topk_w.data(), s.scores.data());
}

std::vector<block> dispatch_send(const layer_ctx& c, layer_state& s) {
  const auto& m = *c.shape;
  const int T = c.tokens(), d = m.hidden, local = c.local_slots(), k = m.top_k;
  // Each token copy goes to a slot of its expert; the plan orders copies by slot, then token.
  std::vector<int> slot_of(n_of(T, k));
  for (int t = 0; t < T; ++t)
    for (int j = 0; j < k; ++j)
      slot_of[n_of(t, k) + j] = c.slots->slot_for(s.topk_idx[n_of(t, k) + j], c.first_token + t);
  s.plan = cpu::make_route_plan(slot_of.data(), T, k, c.slots->slots());
  buffer rows(n_of(static_cast<int>(s.plan.token.size()), d));
  cpu::permute_rows(s.u.data(), d, s.plan, rows.data());
  s.send_offsets.resize(c.ep.ep + 1);
  for (int q = 0; q <= c.ep.ep; ++q) s.send_offsets[q] = s.plan.expert_offsets[q * local];
  auto out = split_by_owner(c, s, rows);
  for (int q = 0; q < c.ep.ep; ++q) {
    out[q].counts.resize(local);
    for (int j = 0; j < local; ++j)
      out[q].counts[j] = s.plan.expert_offsets[q * local + j + 1] - s.plan.expert_offsets[q * local + j];
  }
  return out;
}

void dispatch_receive(const layer_ctx& c, layer_state& s, std::vector<block> from) {
  const int d = c.shape->hidden, local = c.local_slots(), ep = c.ep.ep;
  expert_batch& in = s.in;
  in.counts_from.assign(ep, std::vector<int>(local, 0));
  for (int src = 0; src < ep; ++src) in.counts_from[src] = from[src].counts;
  in.expert_offsets.assign(local + 1, 0);
  in.source_offsets.assign(n_of(ep, local), 0);
  int row = 0;
  for (int j = 0; j < local; ++j) {
    in.expert_offsets[j] = row;
    for (int src = 0; src < ep; ++src) {
      in.source_offsets[n_of(src, local) + j] = row;
      row += in.counts_from[src][j];
    }
  }
  in.expert_offsets[local] = row;
  in.rows.assign(n_of(row, d), 0.f);
  for (int src = 0; src < ep; ++src) scatter_from_source(c, in, from[src].rows, src, in.rows);
}

void mlp_forward(const layer_ctx& c, layer_state& s) {
  const auto& m = *c.shape;
  const int d = m.hidden, f = m.expert_ffn, local = c.local_slots();
  const int n = s.in.expert_offsets[local];
  s.h1.resize(n_of(n, f));
  s.h3.resize(n_of(n, f));
  s.act.resize(n_of(n, f));
  s.out.resize(n_of(n, d));
  for (int j = 0; j < local; ++j) {
    const int off = s.in.expert_offsets[j], rows = s.in.expert_offsets[j + 1] - off;
    if (rows == 0) continue;
    cpu::swiglu_forward(s.in.rows.data() + n_of(off, d), rows, d, f, expert_weights(c, j), s.h1.data() + n_of(off, f),
                        s.h3.data() + n_of(off, f), s.act.data() + n_of(off, f), s.out.data() + n_of(off, d), false);
  }
  if (m.shared_ffn > 0) {
    const auto& ls = c.params->layer(c.local_layer);
    const int T = c.tokens(), fs = m.shared_ffn;
    s.sh1.resize(n_of(T, fs));
    s.sh3.resize(n_of(T, fs));
    s.sact.resize(n_of(T, fs));
    s.ys.resize(n_of(T, d));
    cpu::swiglu_weights w{c.params->at(ls.shared_w1).value.data(), c.params->at(ls.shared_w3).value.data(),
                          c.params->at(ls.shared_w2).value.data()};
    cpu::swiglu_forward(s.u.data(), T, d, fs, w, s.sh1.data(), s.sh3.data(), s.sact.data(), s.ys.data(), false);
  }
}

std::vector<block> combine_send(const layer_ctx& c, layer_state& s) {
  std::vector<block> out(c.ep.ep);
  for (int src = 0; src < c.ep.ep; ++src) out[src] = gather_for_source(c, s.in, s.out, src);
  return out;
}

void combine_receive(const layer_ctx& c, layer_state& s, std::vector<block> from) {
  const auto& m = *c.shape;
  const int T = c.tokens(), d = m.hidden;
  s.expert_out = join_from_owners(c, s, from);
  s.y = s.h;
  cpu::unpermute_weighted_sum(s.expert_out.data(), d, s.plan, s.topk_w.data(), m.top_k, T, s.y.data(), true);
  if (m.shared_ffn > 0)
    for (std::size_t i = 0; i < s.y.size(); ++i) s.y[i] += s.ys[i];
}

std::vector<block> combine_backward_send(const layer_ctx& c, layer_state& s) {
  const auto& m = *c.shape;
  const int T = c.tokens(), d = m.hidden;
  s.d_expert_out.resize(n_of(static_cast<int>(s.plan.token.size()), d));
  s.d_topk_w.assign(n_of(T, m.top_k), 0.f);
  cpu::unpermute_backward(s.dy.data(), s.expert_out.data(), d, s.plan, s.topk_w.data(), m.top_k, s.d_expert_out.data(),
                          s.d_topk_w.data());
  return split_by_owner(c, s, s.d_expert_out);
}

void combine_backward_receive(const layer_ctx& c, layer_state& s, std::vector<block> from) {
  const int d = c.shape->hidden, local = c.local_slots();
  s.d_rows.assign(n_of(s.in.expert_offsets[local], d), 0.f);
  for (int src = 0; src < c.ep.ep; ++src) scatter_from_source(c, s.in, from[src].rows, src, s.d_rows);
}

void mlp_backward_input(const layer_ctx& c, layer_state& s) {
  const auto& m = *c.shape;
  const int d = m.hidden, f = m.expert_ffn, local = c.local_slots();
  const int n = s.in.expert_offsets[local];
  s.dh1.resize(n_of(n, f));
  s.dh3.resize(n_of(n, f));
  s.dx_rows.resize(n_of(n, d));
  for (int j = 0; j < local; ++j) {
    const int off = s.in.expert_offsets[j], rows = s.in.expert_offsets[j + 1] - off;
    if (rows == 0) continue;
    cpu::swiglu_backward_input(s.d_rows.data() + n_of(off, d), rows, d, f, expert_weights(c, j), s.h1.data() + n_of(off, f),
                               s.h3.data() + n_of(off, f), s.dh1.data() + n_of(off, f), s.dh3.data() + n_of(off, f),
                               s.dx_rows.data() + n_of(off, d), false);
  }
  if (m.shared_ffn > 0) {
    const auto& ls = c.params->layer(c.local_layer);
    const int T = c.tokens(), fs = m.shared_ffn;
    s.dsh1.resize(n_of(T, fs));
    s.dsh3.resize(n_of(T, fs));
    s.du_shared.resize(n_of(T, d));
    cpu::swiglu_weights w{c.params->at(ls.shared_w1).value.data(), c.params->at(ls.shared_w3).value.data(),
                          c.params->at(ls.shared_w2).value.data()};
    cpu::swiglu_backward_input(s.dy.data(), T, d, fs, w, s.sh1.data(), s.sh3.data(), s.dsh1.data(), s.dsh3.data(),
                               s.du_shared.data(), false);
  }
}

std::vector<block> dispatch_backward_send(const layer_ctx& c, layer_state& s) {
  std::vector<block> out(c.ep.ep);
  for (int src = 0; src < c.ep.ep; ++src) out[src] = gather_for_source(c, s.in, s.dx_rows, src);
  return out;
}

void dispatch_backward_receive(const layer_ctx& c, layer_state& s, std::vector<block> from) {
  const auto& m = *c.shape;
  const int T = c.tokens(), d = m.hidden;
  buffer rows = join_from_owners(c, s, from);
  s.du_moe.resize(n_of(T, d));
  cpu::permute_rows_backward(rows.data(), d, s.plan, m.top_k, T, s.du_moe.data(), false);
}

void attention_backward_input(const layer_ctx& c, layer_state& s) {
  const auto& m = *c.shape;
  const auto& ls = c.params->layer(c.local_layer);
  const auto& P = *c.params;
  const int T = c.tokens(), d = m.hidden, E = m.experts;
  s.dlogits.resize(n_of(T, E));
  cpu::router_backward(gate_of(m), s.scores.data(), s.topk_idx.data(), s.topk_w.data(), s.d_topk_w.data(), T, E, m.top_k,
                       s.dlogits.data());
  s.du = s.du_moe;
  if (m.shared_ffn > 0)
    for (std::size_t i = 0; i < s.du.size(); ++i) s.du[i] += s.du_shared[i];
  matmul_bt(s.dlogits.data(), P.at(ls.router).value.data(), s.du.data(), T, E, d, /*accumulate=*/true);
  s.dh = s.dy;  // the residual
  cpu::rmsnorm_backward_input(s.du.data(), s.h.data(), P.at(ls.norm2).value.data(), s.inv2.data(), s.dh.data(), T, d, true);
  buffer dctx(n_of(T, d));
  matmul_bt(s.dh.data(), P.at(ls.wo).value.data(), dctx.data(), T, d, d);
  s.dqkv.resize(n_of(T, 3 * d));
  cpu::attention_backward(attn_shape(c), s.qkv.data(), s.qkv.data() + d, s.qkv.data() + 2 * d, 3 * d, s.ctx.data(), d,
                          dctx.data(), d, s.lse.data(), s.dqkv.data(), s.dqkv.data() + d, s.dqkv.data() + 2 * d, 3 * d);
  s.dln1.resize(n_of(T, d));
  matmul_bt(s.dqkv.data(), P.at(ls.wqkv).value.data(), s.dln1.data(), T, 3 * d, d);
  s.dx = s.dh;  // the residual
  cpu::rmsnorm_backward_input(s.dln1.data(), s.x.data(), P.at(ls.norm1).value.data(), s.inv1.data(), s.dx.data(), T, d, true);
}

void mlp_backward_weight(const layer_ctx& c, layer_state& s) {
  const auto& m = *c.shape;
  const auto& ls = c.params->layer(c.local_layer);
  auto& P = *c.params;
  const int d = m.hidden, f = m.expert_ffn, local = c.local_slots();
  // The experts' weight gradients in double, row by row: a copy of an expert seeing some of its
  // tokens adds the same terms the single copy would, so redundant copies change nothing.
  for (int j = 0; j < local; ++j) {
    const int off = s.in.expert_offsets[j], rows = s.in.expert_offsets[j + 1] - off;
    if (rows == 0) continue;
    const float* x = s.in.rows.data() + n_of(off, d);
    cpu::outer_accumulate_f64(rows, d, f, x, d, s.dh1.data() + n_of(off, f), f, P.at(ls.expert_w1[j]).grad.data());
    cpu::outer_accumulate_f64(rows, d, f, x, d, s.dh3.data() + n_of(off, f), f, P.at(ls.expert_w3[j]).grad.data());
    cpu::outer_accumulate_f64(rows, f, d, s.act.data() + n_of(off, f), f, s.d_rows.data() + n_of(off, d), d,
                              P.at(ls.expert_w2[j]).grad.data());
  }
  std::vector<float> g1, g3, g2;  // the shared expert's part of this microbatch, added in double
  if (m.shared_ffn > 0) {
    const int T = c.tokens(), fs = m.shared_ffn;
    g1.assign(n_of(d, fs), 0.f);
    g3.assign(n_of(d, fs), 0.f);
    g2.assign(n_of(fs, d), 0.f);
    cpu::swiglu_backward_weight(s.u.data(), s.sact.data(), s.dy.data(), s.dsh1.data(), s.dsh3.data(), T, d, fs, g1.data(),
                                g3.data(), g2.data());
    add_scratch(P.at(ls.shared_w1), g1);
    add_scratch(P.at(ls.shared_w3), g3);
    add_scratch(P.at(ls.shared_w2), g2);
  }
}

void attention_backward_weight(const layer_ctx& c, layer_state& s) {
  const auto& m = *c.shape;
  const auto& ls = c.params->layer(c.local_layer);
  auto& P = *c.params;
  auto& scratch = *c.scratch;
  const int T = c.tokens(), d = m.hidden, E = m.experts;
  add_weight_grad(P.at(ls.wo), s.ctx.data(), s.dh.data(), T, d, d, scratch);
  add_weight_grad(P.at(ls.wqkv), s.ln1.data(), s.dqkv.data(), T, d, 3 * d, scratch);
  add_weight_grad(P.at(ls.router), s.u.data(), s.dlogits.data(), T, d, E, scratch);
  scratch.assign(d, 0.f);
  cpu::rmsnorm_backward_weight(s.dln1.data(), s.x.data(), s.inv1.data(), scratch.data(), T, d);
  add_scratch(P.at(ls.norm1), scratch);
  scratch.assign(d, 0.f);
  cpu::rmsnorm_backward_weight(s.du.data(), s.h.data(), s.inv2.data(), scratch.data(), T, d);
  add_scratch(P.at(ls.norm2), scratch);
}

void count_expert_load(const layer_ctx& c, const layer_state& s, std::vector<double>& load) {
  load.resize(c.shape->experts, 0.0);
  for (int e : s.topk_idx) load[e] += 1;
}

}  // namespace loom::model
