#include "kernels/cuda/model/moe_layer.hpp"

#include <algorithm>
#include <cmath>

#include "kernels/cuda/attention.hpp"
#include "kernels/cuda/check.hpp"
#include "kernels/cuda/grouped_gemm.hpp"
#include "kernels/cuda/model/elementwise.hpp"
#include "kernels/cuda/permute.hpp"
#include "kernels/cuda/rmsnorm.hpp"
#include "kernels/cuda/router.hpp"
#include "kernels/cuda/swiglu.hpp"

namespace loom::cuda::model {

namespace {

std::size_t n_of(long long a, long long b) { return static_cast<std::size_t>(a) * static_cast<std::size_t>(b); }

// Every step below returns at the first failure: a later kernel would read what a failed one left.
expected<void> alloc(const layer_call& c, dtensor& t, std::size_t bytes) {
  auto a = allocate(*c.pool, bytes, c.stream);
  if (!a) return forward_error(a);
  t = std::move(*a);
  return {};
}
expected<void> alloc_bf16(const layer_call& c, dtensor& t, std::size_t elements) { return alloc(c, t, elements * 2); }
expected<void> alloc_f32(const layer_call& c, dtensor& t, std::size_t elements) { return alloc(c, t, elements * 4); }

bf16* b16(const dtensor& t) { return ptr<bf16>(t); }
float* f32(const dtensor& t) { return ptr<float>(t); }
int* i32(const dtensor& t) { return ptr<int>(t); }

// Row-major products through cuBLASLt. C[m, n] = A[m, k] B[k, n] (+ beta C).
expected<void> mm(const layer_call& c, const bf16* a, const bf16* b, bf16* out, int m, int k, int n, float beta = 0.f) {
  return c.gemm->gemm(false, false, m, n, k, 1.f, a, k, b, n, beta, out, n, c.stream, c.compute_sms);
}
// C[m, n] = A[m, k] B[n, k]^T (+ beta C).
expected<void> mm_bt(const layer_call& c, const bf16* a, const bf16* b, bf16* out, int m, int k, int n, float beta = 0.f) {
  return c.gemm->gemm(false, true, m, n, k, 1.f, a, k, b, k, beta, out, n, c.stream, c.compute_sms);
}
// The experts' persistent GEMM grids beside comm ops: no more CTAs than the SMs compute may fill.
int grouped_ctas(const layer_call& c) { return c.compute_sms; }

// G[in, out] += A[rows, in]^T B[rows, out] (fp32 gradient).
expected<void> wgrad(const layer_call& c, const bf16* a, const bf16* b, float* g, int rows, int in, int out) {
  if (rows == 0) return {};
  return c.gemm->gemm(true, false, in, out, rows, 1.f, a, in, b, out, 1.f, g, out, c.stream, c.compute_sms);
}

expected<void> copy_rows(const layer_call& c, bf16* dst, const bf16* src, std::size_t rows) {
  if (rows == 0) return {};
  return check(cudaMemcpyAsync(dst, src, n_of(static_cast<long long>(rows), c.shape->hidden) * 2, cudaMemcpyDeviceToDevice,
                               c.stream),
               "copying rows between ranks");
}

expected<void> wait_for(const layer_call& c, const device_block& b) {
  if (!b.ready) return {};
  return check(cudaStreamWaitEvent(c.stream, b.ready.get(), 0), "waiting for an exchange's rows");
}

// The block's rows are no longer needed once this stream passes this point.
void done_with(const layer_call& c, device_block& b) {
  if (b.rows) b.rows->retire_on(c.stream);
  b = {};
}

route_plan_device plan_of(const device_layer_state& s) {
  return {i32(s.plan_offsets), i32(s.plan_token), i32(s.plan_slot), i32(s.plan_position)};
}

attention_shape attn_shape(const layer_call& c) {
  const auto& m = *c.shape;
  return {c.seqs, m.seq_len, m.heads, m.head_dim(), 1.f / std::sqrt(static_cast<float>(m.head_dim()))};
}

gating gate_of(const loom::model::model_shape& m) {
  return m.gate == loom::model::gating::sigmoid ? gating::sigmoid : gating::softmax;
}


// Source side: one block per owner rank, cut from `rows` in plan order. The block for this rank is a
// view; the others are copies, so each block has one reader.
expected<std::vector<device_block>> split_by_owner(const layer_call& c, const device_layer_state& s, const dtensor& rows) {
  const int d = c.shape->hidden;
  std::vector<device_block> out(c.ep);
  for (int q = 0; q < c.ep; ++q) {
    const int begin = s.send_offsets[q], count = s.send_offsets[q + 1] - begin;
    if (q == c.ep_index) {
      out[q] = device_block{rows, begin, count, {}, {}};
      continue;
    }
    dtensor mine;
    if (auto e = alloc_bf16(c, mine, n_of(count, d)); !e) return forward_error(e);
    if (auto e = copy_rows(c, b16(mine), b16(rows) + n_of(begin, d), count); !e) return forward_error(e);
    out[q] = device_block{mine, 0, count, {}, {}};
  }
  auto ready = record_event(c.stream);
  if (!ready) return forward_error(ready);
  for (auto& b : out) b.ready = *ready;
  return out;
}

// Source side: the owners' blocks back into plan order, [copies, d].
expected<dtensor> join_from_owners(const layer_call& c, const device_layer_state& s, std::vector<device_block>& from) {
  const int d = c.shape->hidden;
  const int copies = s.send_offsets[c.ep];
  if (c.ep == 1 && from[0].row_begin == 0 && from[0].row_count == copies) {  // one rank: the block is the result
    if (auto e = wait_for(c, from[0]); !e) return forward_error(e);
    return from[0].rows;
  }
  dtensor rows;
  if (auto e = alloc_bf16(c, rows, n_of(copies, d)); !e) return forward_error(e);
  for (int q = 0; q < c.ep; ++q) {
    const int expect = s.send_offsets[q + 1] - s.send_offsets[q];
    if (from[q].row_count != expect)
      return unexpected(errc::internal, "rank " + std::to_string(q) + " sent " + std::to_string(from[q].row_count) +
                                            " rows where " + std::to_string(expect) + " were expected");
    if (auto e = wait_for(c, from[q]); !e) return forward_error(e);
    if (auto e = copy_rows(c, b16(rows) + n_of(s.send_offsets[q], d), b16(from[q].rows) + n_of(from[q].row_begin, d), expect); !e)
      return forward_error(e);
    done_with(c, from[q]);
  }
  return rows;
}

// Owner side: what goes back to one source, its rows of each local slot in slot order.
expected<device_block> gather_for_source(const layer_call& c, const device_layer_state& s, const dtensor& rows, int source) {
  const int d = c.shape->hidden;
  const int local = c.params->local_slots;
  int n = 0;
  for (int j = 0; j < local; ++j) n += s.counts_from[source][j];
  if (c.ep == 1) return device_block{rows, 0, n, {}, {}};  // one source: the grouped layout is its order
  dtensor out;
  if (auto e = alloc_bf16(c, out, n_of(n, d)); !e) return forward_error(e);
  int at = 0;
  for (int j = 0; j < local; ++j) {
    const int start = s.source_offsets[n_of(source, local) + j], count = s.counts_from[source][j];
    if (auto e = copy_rows(c, b16(out) + n_of(at, d), b16(rows) + n_of(start, d), count); !e) return forward_error(e);
    at += count;
  }
  return device_block{out, 0, n, {}, {}};
}

expected<std::vector<device_block>> blocks_for_sources(const layer_call& c, const device_layer_state& s, const dtensor& rows) {
  std::vector<device_block> out(c.ep);
  for (int src = 0; src < c.ep; ++src) {
    auto b = gather_for_source(c, s, rows, src);
    if (!b) return forward_error(b);
    out[src] = std::move(*b);
  }
  auto ready = record_event(c.stream);
  if (!ready) return forward_error(ready);
  for (auto& b : out) b.ready = *ready;
  return out;
}

// Owner side: each source's rows (ordered by local slot) into the grouped layout `rows`.
expected<void> scatter_from_sources(const layer_call& c, const device_layer_state& s, std::vector<device_block>& from,
                                    dtensor& rows) {
  const int d = c.shape->hidden, local = c.params->local_slots;
  const int n = s.expert_offsets[local];
  if (c.ep == 1) {  // one source: its block is already in the grouped layout
    if (auto e = wait_for(c, from[0]); !e) return e;
    if (from[0].row_begin == 0) {
      rows = from[0].rows;
      return {};
    }
  }
  if (auto e = alloc_bf16(c, rows, n_of(n, d)); !e) return e;
  for (int src = 0; src < c.ep; ++src) {
    if (auto e = wait_for(c, from[src]); !e) return e;
    int at = from[src].row_begin;
    for (int j = 0; j < local; ++j) {
      const int start = s.source_offsets[n_of(src, local) + j], count = s.counts_from[src][j];
      if (auto e = copy_rows(c, b16(rows) + n_of(start, d), b16(from[src].rows) + n_of(at, d), count); !e) return e;
      at += count;
    }
    done_with(c, from[src]);
  }
  return {};
}

}  // namespace

expected<shared_event> record_event(cudaStream_t stream) {
  cudaEvent_t e = nullptr;
  if (auto ok = check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreate"); !ok) return forward_error(ok);
  shared_event owned(e, [](cudaEvent_t ev) { cudaEventDestroy(ev); });
  if (auto ok = check(cudaEventRecord(e, stream), "cudaEventRecord"); !ok) return forward_error(ok);
  return owned;
}

namespace {
template <class F>
void each_tensor(const device_layer_state& s, F f) {
  for (const dtensor* t : {&s.x, &s.ln1, &s.inv1, &s.qkv, &s.ctx, &s.lse, &s.h, &s.u, &s.inv2, &s.scores, &s.topk_idx, &s.topk_w, &s.plan_offsets,
                           &s.plan_token, &s.plan_slot, &s.plan_position, &s.in_rows, &s.expert_offsets_dev, &s.h13, &s.act, &s.out, &s.sh13,
                           &s.sact, &s.ys, &s.expert_out, &s.y, &s.dy, &s.d_expert_out, &s.d_topk_w, &s.d_rows, &s.dh13, &s.dx_rows, &s.dsh13,
                           &s.du_shared, &s.du_moe, &s.dlogits, &s.dlogits16, &s.du, &s.dh, &s.dqkv, &s.dln1, &s.dx})
    f(*t);
}
}  // namespace

std::size_t device_layer_state::bytes() const {
  std::size_t n = 0;
  each_tensor(*this, [&](const dtensor& t) { n += bytes_of(t); });
  return n;
}

void device_layer_state::retire_on(cudaStream_t stream) const {
  each_tensor(*this, [&](const dtensor& t) {
    if (t) t->retire_on(stream);
  });
}

expected<void> attention_forward(const layer_call& c, device_layer_state& s) {
  const auto& m = *c.shape;
  const auto& P = *c.params;
  const int T = c.tokens(), d = m.hidden, E = m.experts, k = m.top_k;
  if (auto e = alloc_bf16(c, s.ln1, n_of(T, d)); !e) return e;
  if (auto e = alloc_f32(c, s.inv1, T); !e) return e;
  if (auto e = rmsnorm_forward(b16(s.x), b16(P.norm1), b16(s.ln1), f32(s.inv1), T, d, m.norm_eps, c.stream); !e) return e;
  if (auto e = alloc_bf16(c, s.qkv, n_of(T, 3 * d)); !e) return e;
  if (auto e = mm(c, b16(s.ln1), b16(P.wqkv), b16(s.qkv), T, d, 3 * d); !e) return e;
  if (auto e = alloc_bf16(c, s.ctx, n_of(T, d)); !e) return e;
  if (auto e = alloc_f32(c, s.lse, n_of(c.seqs * m.heads, m.seq_len)); !e) return e;
  if (auto e = cuda::attention_forward(attn_shape(c), b16(s.qkv), b16(s.qkv) + d, b16(s.qkv) + 2 * d, 3 * d, b16(s.ctx), d,
                                       f32(s.lse), c.stream);
      !e)
    return e;
  if (auto e = alloc_bf16(c, s.h, n_of(T, d)); !e) return e;  // h = x + ctx Wo
  if (auto e = check(cudaMemcpyAsync(b16(s.h), b16(s.x), n_of(T, d) * 2, cudaMemcpyDeviceToDevice, c.stream), "residual"); !e)
    return e;
  if (auto e = mm(c, b16(s.ctx), b16(P.wo), b16(s.h), T, d, d, 1.f); !e) return e;
  if (auto e = alloc_bf16(c, s.u, n_of(T, d)); !e) return e;
  if (auto e = alloc_f32(c, s.inv2, T); !e) return e;
  if (auto e = rmsnorm_forward(b16(s.h), b16(P.norm2), b16(s.u), f32(s.inv2), T, d, m.norm_eps, c.stream); !e) return e;
  dtensor logits;  // fp32 [T, E]
  if (auto e = alloc_f32(c, logits, n_of(T, E)); !e) return e;
  if (auto e = c.gemm->gemm(false, false, T, E, d, 1.f, b16(s.u), d, b16(P.router), E, 0.f, f32(logits), E, c.stream, c.compute_sms); !e)
    return e;
  if (m.router_skew != 0.f)
    if (auto e = add_router_skew(f32(logits), T, E, m.router_skew, c.token_seed, c.first_token, c.stream); !e) return e;
  if (auto e = alloc_f32(c, s.scores, n_of(T, E)); !e) return e;
  if (auto e = alloc(c, s.topk_idx, n_of(T, k) * 4); !e) return e;
  if (auto e = alloc_f32(c, s.topk_w, n_of(T, k)); !e) return e;
  const float* bias = m.gate == loom::model::gating::sigmoid ? f32(P.router_bias) : nullptr;
  if (auto e = router_forward(gate_of(m), f32(logits), bias, T, E, k, i32(s.topk_idx), f32(s.topk_w), f32(s.scores), c.stream); !e)
    return e;
  if (c.load)
    if (auto e = count_load(i32(s.topk_idx), T * k, c.load, c.stream); !e) return e;
  return {};
}

expected<std::vector<device_block>> dispatch_send(const layer_call& c, device_layer_state& s) {
  const auto& m = *c.shape;
  const auto& P = *c.params;
  const int T = c.tokens(), d = m.hidden, k = m.top_k, slots = P.slots, local = P.local_slots;
  const int copies = T * k;
  // Each token copy goes to a slot of its expert; the plan orders the copies by slot, then token.
  dtensor slot_of, workspace;
  if (auto e = alloc(c, slot_of, n_of(copies, 1) * 4); !e) return forward_error(e);
  if (auto e = choose_slots(i32(s.topk_idx), T, k, i32(P.copy_offsets), i32(P.copy_slots), c.first_token, i32(slot_of), c.stream); !e)
    return forward_error(e);
  for (auto [t, n] : {std::pair{&s.plan_offsets, slots + 1}, std::pair{&s.plan_token, copies}, std::pair{&s.plan_slot, copies},
                      std::pair{&s.plan_position, copies}})
    if (auto e = alloc(c, *t, n_of(n, 1) * 4); !e) return forward_error(e);
  const std::size_t ws = route_plan_workspace_bytes(T, k, slots);
  if (auto e = alloc(c, workspace, ws); !e) return forward_error(e);
  if (auto e = make_route_plan(i32(slot_of), T, k, slots, plan_of(s), workspace->data(), ws, c.stream); !e) return forward_error(e);
  // The one read-back: how many copies each slot (so each rank) gets. Into page-locked memory the copy
  // is asynchronous, so the permute is enqueued before the host waits, and the host waits for the copy
  // alone; into pageable memory (no read-back given) the copy itself waits for the stream.
  s.slot_offsets.resize(slots + 1);
  int* counts = s.slot_offsets.data();
  if (c.readback) {
    auto pinned = c.readback->ints(n_of(slots + 1, 1));
    if (!pinned) return forward_error(pinned);
    counts = *pinned;
  }
  if (auto e = check(cudaMemcpyAsync(counts, i32(s.plan_offsets), n_of(slots + 1, 4), cudaMemcpyDeviceToHost, c.stream),
                     "reading the route plan");
      !e)
    return forward_error(e);
  if (c.readback)
    if (auto e = check(cudaEventRecord(c.readback->copied(), c.stream), "reading the route plan"); !e) return forward_error(e);
  dtensor rows;
  if (auto e = alloc_bf16(c, rows, n_of(copies, d)); !e) return forward_error(e);
  if (auto e = permute_rows(b16(s.u), d, plan_of(s), copies, b16(rows), c.stream, c.max_blocks); !e) return forward_error(e);
  if (c.readback) {
    if (auto e = check(cudaEventSynchronize(c.readback->copied()), "reading the route plan"); !e) return forward_error(e);
    std::copy(counts, counts + slots + 1, s.slot_offsets.begin());
  } else if (auto e = check(cudaStreamSynchronize(c.stream), "reading the route plan"); !e) {
    return forward_error(e);
  }
  s.send_offsets.resize(c.ep + 1);
  for (int q = 0; q <= c.ep; ++q) s.send_offsets[q] = s.slot_offsets[n_of(q, local)];
  auto out = split_by_owner(c, s, rows);
  if (!out) return out;
  for (int q = 0; q < c.ep; ++q) {
    (*out)[q].counts.resize(local);
    for (int j = 0; j < local; ++j) (*out)[q].counts[j] = s.slot_offsets[q * local + j + 1] - s.slot_offsets[q * local + j];
  }
  return out;
}

expected<void> dispatch_receive(const layer_call& c, device_layer_state& s, std::vector<device_block> from) {
  const int local = c.params->local_slots, ep = c.ep;
  s.counts_from.assign(ep, std::vector<int>(local, 0));
  for (int src = 0; src < ep; ++src) {
    if (static_cast<int>(from[src].counts.size()) != local)
      return unexpected(errc::internal, "dispatch: rank " + std::to_string(src) + " sent counts for " +
                                            std::to_string(from[src].counts.size()) + " slots, not " + std::to_string(local));
    s.counts_from[src] = from[src].counts;
  }
  s.expert_offsets.assign(local + 1, 0);
  s.source_offsets.assign(n_of(ep, local), 0);
  int row = 0;
  for (int j = 0; j < local; ++j) {
    s.expert_offsets[j] = row;
    for (int src = 0; src < ep; ++src) {
      s.source_offsets[n_of(src, local) + j] = row;
      row += s.counts_from[src][j];
    }
  }
  s.expert_offsets[local] = row;
  if (auto e = alloc(c, s.expert_offsets_dev, n_of(local + 1, 4)); !e) return e;
  // Pageable source: the copy is staged before the call returns, so the vector may change later.
  if (auto e = check(cudaMemcpyAsync(i32(s.expert_offsets_dev), s.expert_offsets.data(), n_of(local + 1, 4), cudaMemcpyHostToDevice,
                                     c.stream),
                     "uploading expert offsets");
      !e)
    return e;
  return scatter_from_sources(c, s, from, s.in_rows);
}

expected<void> mlp_forward(const layer_call& c, device_layer_state& s) {
  const auto& m = *c.shape;
  const auto& P = *c.params;
  const int d = m.hidden, f = m.expert_ffn, local = P.local_slots;
  const int n = s.expert_offsets[local];
  if (auto e = alloc_bf16(c, s.h13, n_of(n, 2 * f)); !e) return e;
  if (auto e = alloc_bf16(c, s.act, n_of(n, f)); !e) return e;
  if (auto e = alloc_bf16(c, s.out, n_of(n, d)); !e) return e;
  if (n > 0) {
    if (auto e = grouped_gemm(b16(s.in_rows), b16(P.experts_w13), weight_layout::kn, b16(s.h13), i32(s.expert_offsets_dev), local,
                              n, 2 * f, d, c.stream, default_grouped_impl, grouped_ctas(c));
        !e)
      return e;
    if (auto e = swiglu_forward(b16(s.h13), b16(s.h13) + f, 2 * f, b16(s.act), f, n, f, c.stream); !e) return e;
    if (auto e = grouped_gemm(b16(s.act), b16(P.experts_w2), weight_layout::kn, b16(s.out), i32(s.expert_offsets_dev), local, n, d,
                              f, c.stream, default_grouped_impl, grouped_ctas(c));
        !e)
      return e;
  }
  if (m.shared_ffn > 0) {
    const int T = c.tokens(), fs = m.shared_ffn;
    if (auto e = alloc_bf16(c, s.sh13, n_of(T, 2 * fs)); !e) return e;
    if (auto e = alloc_bf16(c, s.sact, n_of(T, fs)); !e) return e;
    if (auto e = alloc_bf16(c, s.ys, n_of(T, d)); !e) return e;
    if (auto e = mm(c, b16(s.u), b16(P.shared_w13), b16(s.sh13), T, d, 2 * fs); !e) return e;
    if (auto e = swiglu_forward(b16(s.sh13), b16(s.sh13) + fs, 2 * fs, b16(s.sact), fs, T, fs, c.stream); !e) return e;
    if (auto e = mm(c, b16(s.sact), b16(P.shared_w2), b16(s.ys), T, fs, d); !e) return e;
  }
  return {};
}

expected<std::vector<device_block>> combine_send(const layer_call& c, device_layer_state& s) {
  return blocks_for_sources(c, s, s.out);
}

expected<void> combine_receive(const layer_call& c, device_layer_state& s, std::vector<device_block> from) {
  const auto& m = *c.shape;
  const int T = c.tokens(), d = m.hidden;
  auto joined = join_from_owners(c, s, from);
  if (!joined) return forward_error(joined);
  s.expert_out = std::move(*joined);
  if (auto e = alloc_bf16(c, s.y, n_of(T, d)); !e) return e;
  if (auto e = check(cudaMemcpyAsync(b16(s.y), b16(s.h), n_of(T, d) * 2, cudaMemcpyDeviceToDevice, c.stream), "residual"); !e) return e;
  if (auto e = unpermute_weighted_sum(b16(s.expert_out), d, plan_of(s), f32(s.topk_w), m.top_k, T, b16(s.y), true, c.stream, c.max_blocks); !e)
    return e;
  if (m.shared_ffn > 0)
    if (auto e = add_into(b16(s.y), b16(s.ys), n_of(T, d), c.stream); !e) return e;
  return {};
}

expected<std::vector<device_block>> combine_backward_send(const layer_call& c, device_layer_state& s) {
  const auto& m = *c.shape;
  const int T = c.tokens(), d = m.hidden, copies = s.send_offsets[c.ep];
  if (auto e = alloc_bf16(c, s.d_expert_out, n_of(copies, d)); !e) return forward_error(e);
  if (auto e = alloc_f32(c, s.d_topk_w, n_of(T, m.top_k)); !e) return forward_error(e);
  if (auto e = unpermute_backward(b16(s.dy), b16(s.expert_out), d, plan_of(s), copies, f32(s.topk_w), m.top_k, b16(s.d_expert_out),
                                  f32(s.d_topk_w), c.stream, c.max_blocks);
      !e)
    return forward_error(e);
  return split_by_owner(c, s, s.d_expert_out);
}

expected<void> combine_backward_receive(const layer_call& c, device_layer_state& s, std::vector<device_block> from) {
  return scatter_from_sources(c, s, from, s.d_rows);
}

expected<void> mlp_backward_input(const layer_call& c, device_layer_state& s) {
  const auto& m = *c.shape;
  const auto& P = *c.params;
  const int d = m.hidden, f = m.expert_ffn, local = P.local_slots;
  const int n = s.expert_offsets[local];
  if (auto e = alloc_bf16(c, s.dh13, n_of(n, 2 * f)); !e) return e;
  if (auto e = alloc_bf16(c, s.dx_rows, n_of(n, d)); !e) return e;
  if (n > 0) {
    // d act = d out W2^T, into the first half of dh13 (swiglu_backward may read dact where it writes dh1).
    if (auto e = grouped_gemm(b16(s.d_rows), b16(P.experts_w2), weight_layout::nk, b16(s.dh13), i32(s.expert_offsets_dev), local,
                              n, f, d, c.stream, default_grouped_impl, grouped_ctas(c));
        !e)
      return e;
    // dact sits at dh13 with row stride 2f: the grouped GEMM wrote [n, f] densely, so move it first.
    dtensor dact;
    if (auto e = alloc_bf16(c, dact, n_of(n, f)); !e) return e;
    if (auto e = check(cudaMemcpyAsync(b16(dact), b16(s.dh13), n_of(n, f) * 2, cudaMemcpyDeviceToDevice, c.stream), "dact"); !e)
      return e;
    if (auto e = swiglu_backward(b16(dact), f, b16(s.h13), b16(s.h13) + f, 2 * f, b16(s.dh13), b16(s.dh13) + f, 2 * f, n, f,
                                 c.stream);
        !e)
      return e;
    if (auto e = grouped_gemm(b16(s.dh13), b16(P.experts_w13), weight_layout::nk, b16(s.dx_rows), i32(s.expert_offsets_dev), local,
                              n, d, 2 * f, c.stream, default_grouped_impl, grouped_ctas(c));
        !e)
      return e;
  }
  if (m.shared_ffn > 0) {
    const int T = c.tokens(), fs = m.shared_ffn;
    dtensor dsact;
    if (auto e = alloc_bf16(c, dsact, n_of(T, fs)); !e) return e;
    if (auto e = alloc_bf16(c, s.dsh13, n_of(T, 2 * fs)); !e) return e;
    if (auto e = alloc_bf16(c, s.du_shared, n_of(T, d)); !e) return e;
    if (auto e = mm_bt(c, b16(s.dy), b16(P.shared_w2), b16(dsact), T, d, fs); !e) return e;
    if (auto e = swiglu_backward(b16(dsact), fs, b16(s.sh13), b16(s.sh13) + fs, 2 * fs, b16(s.dsh13), b16(s.dsh13) + fs, 2 * fs, T, fs,
                                 c.stream);
        !e)
      return e;
    if (auto e = mm_bt(c, b16(s.dsh13), b16(P.shared_w13), b16(s.du_shared), T, 2 * fs, d); !e) return e;
  }
  return {};
}

expected<std::vector<device_block>> dispatch_backward_send(const layer_call& c, device_layer_state& s) {
  return blocks_for_sources(c, s, s.dx_rows);
}

expected<void> dispatch_backward_receive(const layer_call& c, device_layer_state& s, std::vector<device_block> from) {
  const auto& m = *c.shape;
  const int T = c.tokens(), d = m.hidden;
  auto rows = join_from_owners(c, s, from);
  if (!rows) return forward_error(rows);
  if (auto e = alloc_bf16(c, s.du_moe, n_of(T, d)); !e) return e;
  return permute_rows_backward(b16(*rows), d, plan_of(s), m.top_k, T, b16(s.du_moe), false, c.stream, c.max_blocks);
}

expected<void> attention_backward_input(const layer_call& c, device_layer_state& s) {
  const auto& m = *c.shape;
  const auto& P = *c.params;
  const int T = c.tokens(), d = m.hidden, E = m.experts;
  if (auto e = alloc_f32(c, s.dlogits, n_of(T, E)); !e) return e;
  if (auto e = router_backward(gate_of(m), f32(s.scores), i32(s.topk_idx), f32(s.topk_w), f32(s.d_topk_w), T, E, m.top_k,
                               f32(s.dlogits), c.stream);
      !e)
    return e;
  if (auto e = alloc_bf16(c, s.dlogits16, n_of(T, E)); !e) return e;
  if (auto e = to_bf16(f32(s.dlogits), b16(s.dlogits16), n_of(T, E), c.stream); !e) return e;
  // du = du_moe + du_shared + dlogits Wr^T
  if (auto e = alloc_bf16(c, s.du, n_of(T, d)); !e) return e;
  if (auto e = check(cudaMemcpyAsync(b16(s.du), b16(s.du_moe), n_of(T, d) * 2, cudaMemcpyDeviceToDevice, c.stream), "du"); !e) return e;
  if (m.shared_ffn > 0)
    if (auto e = add_into(b16(s.du), b16(s.du_shared), n_of(T, d), c.stream); !e) return e;
  if (auto e = mm_bt(c, b16(s.dlogits16), b16(P.router), b16(s.du), T, E, d, 1.f); !e) return e;
  // dh = dy (the residual) + RMSNorm-2 backward of du
  if (auto e = alloc_bf16(c, s.dh, n_of(T, d)); !e) return e;
  if (auto e = check(cudaMemcpyAsync(b16(s.dh), b16(s.dy), n_of(T, d) * 2, cudaMemcpyDeviceToDevice, c.stream), "dh"); !e) return e;
  if (auto e = rmsnorm_backward_input(b16(s.du), b16(s.h), b16(P.norm2), f32(s.inv2), b16(s.dh), T, d, true, c.stream); !e) return e;
  dtensor dctx, workspace;
  if (auto e = alloc_bf16(c, dctx, n_of(T, d)); !e) return e;
  if (auto e = mm_bt(c, b16(s.dh), b16(P.wo), b16(dctx), T, d, d); !e) return e;
  if (auto e = alloc_bf16(c, s.dqkv, n_of(T, 3 * d)); !e) return e;
  const auto shape = attn_shape(c);
  const std::size_t ws = attention_backward_workspace_bytes(shape);
  if (auto e = alloc(c, workspace, ws); !e) return e;
  if (auto e = cuda::attention_backward(shape, b16(s.qkv), b16(s.qkv) + d, b16(s.qkv) + 2 * d, 3 * d, b16(s.ctx), d, b16(dctx), d,
                                        f32(s.lse), b16(s.dqkv), b16(s.dqkv) + d, b16(s.dqkv) + 2 * d, 3 * d, workspace->data(), ws,
                                        c.stream);
      !e)
    return e;
  if (auto e = alloc_bf16(c, s.dln1, n_of(T, d)); !e) return e;
  if (auto e = mm_bt(c, b16(s.dqkv), b16(P.wqkv), b16(s.dln1), T, 3 * d, d); !e) return e;
  if (auto e = alloc_bf16(c, s.dx, n_of(T, d)); !e) return e;
  if (auto e = check(cudaMemcpyAsync(b16(s.dx), b16(s.dh), n_of(T, d) * 2, cudaMemcpyDeviceToDevice, c.stream), "dx"); !e) return e;
  return rmsnorm_backward_input(b16(s.dln1), b16(s.x), b16(P.norm1), f32(s.inv1), b16(s.dx), T, d, true, c.stream);
}

expected<void> mlp_backward_weight(const layer_call& c, device_layer_state& s) {
  const auto& m = *c.shape;
  const auto& P = *c.params;
  const int d = m.hidden, f = m.expert_ffn, local = P.local_slots;
  const int n = s.expert_offsets[local];
  if (n > 0) {
    if (auto e = grouped_gemm_wgrad(b16(s.in_rows), b16(s.dh13), f32(P.g_experts_w13), i32(s.expert_offsets_dev), local, n, d, 2 * f,
                                    c.stream, default_grouped_impl, grouped_ctas(c));
        !e)
      return e;
    if (auto e = grouped_gemm_wgrad(b16(s.act), b16(s.d_rows), f32(P.g_experts_w2), i32(s.expert_offsets_dev), local, n, f, d,
                                    c.stream, default_grouped_impl, grouped_ctas(c));
        !e)
      return e;
  }
  if (m.shared_ffn > 0) {
    const int T = c.tokens(), fs = m.shared_ffn;
    if (auto e = wgrad(c, b16(s.u), b16(s.dsh13), f32(P.g_shared_w13), T, d, 2 * fs); !e) return e;
    if (auto e = wgrad(c, b16(s.sact), b16(s.dy), f32(P.g_shared_w2), T, fs, d); !e) return e;
  }
  return {};
}

expected<void> attention_backward_weight(const layer_call& c, device_layer_state& s) {
  const auto& m = *c.shape;
  const auto& P = *c.params;
  const int T = c.tokens(), d = m.hidden, E = m.experts;
  if (auto e = wgrad(c, b16(s.ctx), b16(s.dh), f32(P.g_wo), T, d, d); !e) return e;
  if (auto e = wgrad(c, b16(s.ln1), b16(s.dqkv), f32(P.g_wqkv), T, d, 3 * d); !e) return e;
  if (auto e = wgrad(c, b16(s.u), b16(s.dlogits16), f32(P.g_router), T, d, E); !e) return e;
  if (auto e = rmsnorm_backward_weight(b16(s.dln1), b16(s.x), f32(s.inv1), f32(P.g_norm1), T, d, c.stream); !e) return e;
  return rmsnorm_backward_weight(b16(s.du), b16(s.h), f32(s.inv2), f32(P.g_norm2), T, d, c.stream);
}

}  // namespace loom::cuda::model
