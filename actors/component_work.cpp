#include "actors/component_work.hpp"

#include <string>

#include "actors/cuda_backend.hpp"
#include "kernels/model/edges.hpp"

namespace loom::actors {


namespace {

model::layer_ctx layer_of(rank_context& ctx, const op_request& op) {
  model::layer_ctx lc;
  lc.shape = &ctx.shape;
  lc.ep = ctx.ep;
  lc.slots = &ctx.chunks[op.chunk].slots[op.layer];
  lc.seqs = ctx.seqs;
  lc.first_token = ctx.ep_index * ctx.seqs * ctx.shape.seq_len;
  lc.token_seed = model::token_seed(ctx.seed, ctx.step, ctx.chunks[op.chunk].microbatch_offset + op.microbatch,
                                    ctx.chunks[op.chunk].first_layer + op.layer);
  lc.params = ctx.chunks[op.chunk].params.get();
  lc.local_layer = op.layer;
  lc.scratch = &ctx.scratch;
  return lc;
}

// This rank's share of the microbatch's tokens (the first and last stages need them).
void ensure_tokens(rank_context& ctx, const op_request& op, chunk_run& run) {
  if (!run.tokens.ids.empty()) return;
  const auto& c = ctx.chunks[op.chunk];
  run.tokens = model::synthetic_tokens(ctx.seed, ctx.step, c.microbatch_offset + op.microbatch, ctx.ep_index * ctx.seqs,
                                       ctx.seqs, ctx.shape.seq_len, ctx.shape.vocab);
}

std::string where(const rank_context& ctx, const op_request& op) {
  return "rank " + std::to_string(ctx.pipeline_rank) + (ctx.ep.ep > 1 ? " (ep " + std::to_string(ctx.ep_index) + ")" : "") +
         ", " + to_string(static_cast<op_kind>(op.kind)) + " of chunk " + std::to_string(op.chunk) + " layer " +
         std::to_string(op.layer) + " microbatch " + std::to_string(op.microbatch);
}

bool injected(const rank_context& ctx, const op_request& op) {
  return ctx.inject && !ctx.inject->hang && ctx.inject->kind == op.kind && ctx.inject->microbatch == op.microbatch;
}

}  // namespace

int group_peer(const rank_context& ctx, int ep_index) { return ctx.pipeline_rank * ctx.ep.ep + ep_index; }

tag exchange_tag(const rank_context& ctx, const op_request& op) {
  const auto& c = ctx.chunks[op.chunk];
  traffic t = traffic::dispatch;
  switch (static_cast<op_kind>(op.kind)) {
    case op_kind::dispatch_f: t = traffic::dispatch; break;
    case op_kind::combine_f: t = traffic::combine; break;
    case op_kind::dispatch_b: t = traffic::dispatch_backward; break;
    case op_kind::combine_b: t = traffic::combine_backward; break;
    default: break;
  }
  return {t, static_cast<std::uint16_t>(c.pipeline), static_cast<std::uint16_t>(c.stage), static_cast<std::uint16_t>(op.layer),
          static_cast<std::uint32_t>(op.microbatch)};
}

payload to_payload(model::block b) {
  payload p;
  p.f = std::move(b.rows);
  p.i.assign(b.counts.begin(), b.counts.end());
  return p;
}

model::block from_payload(payload p) {
  model::block b;
  b.rows = std::move(p.f);
  b.counts.assign(p.i.begin(), p.i.end());
  return b;
}

expected<void> run_compute(rank_context& ctx, const op_request& op) {
  if (injected(ctx, op)) return unexpected(errc::internal, where(ctx, op) + ": injected fault");
  if (ctx.mode == backend::cuda) return gpu_compute(ctx, op);
  chunk_run& run = ctx.run(op.chunk, op.microbatch);
  auto& params = *ctx.chunks[op.chunk].params;
  const int L = ctx.layers_per_chunk;
  try {
    switch (static_cast<op_kind>(op.kind)) {
      case op_kind::embed_f:
        ensure_tokens(ctx, op, run);
        model::embed_forward(ctx.shape, params, run.tokens.ids, run.layers[0].x);
        break;
      case op_kind::attn_f: {
        auto lc = layer_of(ctx, op);
        model::attention_forward(lc, run.layers[op.layer]);
        std::lock_guard<std::mutex> lock(ctx.stats_mutex);
        std::vector<double> counts;
        model::count_expert_load(lc, run.layers[op.layer], counts);
        double* dst = ctx.load.data() + (static_cast<std::size_t>(op.chunk) * L + op.layer) * ctx.shape.experts;
        for (int e = 0; e < ctx.shape.experts; ++e) dst[e] += counts[e];
        break;
      }
      case op_kind::mlp_f: {
        auto& s = run.layers[op.layer];
        model::mlp_forward(layer_of(ctx, op), s);
        std::lock_guard<std::mutex> lock(ctx.stats_mutex);
        ctx.expert_rows += s.in.expert_offsets.empty() ? 0 : s.in.expert_offsets.back();
        break;
      }
      case op_kind::head_f: {
        ensure_tokens(ctx, op, run);
        run.head.y = std::move(run.layers[L - 1].y);
        model::head_forward(ctx.shape, params, run.tokens.targets, static_cast<float>(1.0 / ctx.total_tokens), run.head);
        std::lock_guard<std::mutex> lock(ctx.stats_mutex);
        ctx.loss_sum += run.head.loss_sum;
        break;
      }
      case op_kind::head_b: model::head_backward_input(ctx.shape, params, run.head, run.layers[L - 1].dy); break;
      case op_kind::head_w: model::head_backward_weight(ctx.shape, params, run.head); break;
      case op_kind::mlp_b: model::mlp_backward_input(layer_of(ctx, op), run.layers[op.layer]); break;
      case op_kind::mlp_w: model::mlp_backward_weight(layer_of(ctx, op), run.layers[op.layer]); break;
      case op_kind::attn_b: {
        auto& s = run.layers[op.layer];
        model::attention_backward_input(layer_of(ctx, op), s);
        if (op.layer > 0) run.layers[op.layer - 1].dy = std::move(s.dx);
        else run.input_grad = std::move(s.dx);
        s.release_after_input_backward();
        break;
      }
      case op_kind::attn_w: model::attention_backward_weight(layer_of(ctx, op), run.layers[op.layer]); break;
      case op_kind::embed_w:
        ensure_tokens(ctx, op, run);
        model::embed_backward_weight(ctx.shape, params, run.tokens.ids, run.input_grad);
        break;
      default:
        return unexpected(errc::internal, where(ctx, op) + ": not a compute op");
    }
  } catch (const std::exception& e) {  // e.g. std::bad_alloc: becomes this op's error
    return unexpected(errc::backend_error, where(ctx, op) + ": " + e.what());
  }
  ctx.note_bytes();
  return {};
}

expected<std::vector<payload>> exchange_out(rank_context& ctx, const op_request& op) {
  if (injected(ctx, op)) return unexpected(errc::internal, where(ctx, op) + ": injected fault");
  if (ctx.mode == backend::cuda) return gpu_exchange_out(ctx, op);
  chunk_run& run = ctx.run(op.chunk, op.microbatch);
  auto& s = run.layers[op.layer];
  const auto lc = layer_of(ctx, op);
  std::vector<model::block> blocks;
  try {
    switch (static_cast<op_kind>(op.kind)) {
      case op_kind::dispatch_f: blocks = model::dispatch_send(lc, s); break;
      case op_kind::combine_f: blocks = model::combine_send(lc, s); break;
      case op_kind::combine_b: blocks = model::combine_backward_send(lc, s); break;
      case op_kind::dispatch_b: blocks = model::dispatch_backward_send(lc, s); break;
      default: return unexpected(errc::internal, where(ctx, op) + ": not a communication op");
    }
  } catch (const std::exception& e) {
    return unexpected(errc::backend_error, where(ctx, op) + ": " + e.what());
  }
  std::vector<payload> out;
  out.reserve(blocks.size());
  for (auto& b : blocks) out.push_back(to_payload(std::move(b)));
  return out;
}

expected<void> exchange_in(rank_context& ctx, const op_request& op, std::vector<payload> received) {
  if (ctx.mode == backend::cuda) return gpu_exchange_in(ctx, op, std::move(received));
  std::vector<model::block> from;
  from.reserve(received.size());
  for (auto& p : received) from.push_back(from_payload(std::move(p)));
  chunk_run& run = ctx.run(op.chunk, op.microbatch);
  auto& s = run.layers[op.layer];
  const auto lc = layer_of(ctx, op);
  try {
    switch (static_cast<op_kind>(op.kind)) {
      case op_kind::dispatch_f: model::dispatch_receive(lc, s, std::move(from)); break;
      case op_kind::combine_f:
        model::combine_receive(lc, s, std::move(from));
        if (op.layer + 1 < ctx.layers_per_chunk) run.layers[op.layer + 1].x = std::move(s.y);
        break;
      case op_kind::combine_b: model::combine_backward_receive(lc, s, std::move(from)); break;
      case op_kind::dispatch_b: model::dispatch_backward_receive(lc, s, std::move(from)); break;
      default: return unexpected(errc::internal, where(ctx, op) + ": not a communication op");
    }
  } catch (const std::exception& e) {
    return unexpected(errc::backend_error, where(ctx, op) + ": " + e.what());
  }
  ctx.note_bytes();
  return {};
}

}  // namespace loom::actors
