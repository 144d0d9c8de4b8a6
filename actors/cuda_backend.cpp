#include "actors/cuda_backend.hpp"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <optional>
#include <string>

#include "kernels/cuda/check.hpp"
#include "kernels/cuda/model/edges.hpp"
#include "kernels/cuda/model/moe_layer.hpp"
#include "kernels/model/synthetic_data.hpp"

namespace loom::actors {

namespace gm = cuda::model;
using cuda::check;

struct device_gpu {
  int device = 0;
  int sms = 0;  // streaming multiprocessors
  cuda::device_pool pool;
};

// What one component actor enqueues on: its stream and its cuBLASLt handle.
struct component_lane {
  cudaStream_t stream = nullptr;
  std::unique_ptr<cuda::blas> gemm;
  std::optional<gm::host_readback> readback;  // comm components: the route plan's page-locked read-back
};

struct device_rank {
  std::shared_ptr<device_gpu> gpu;
  std::vector<std::array<component_lane, 4>> lanes;  // [chunk][component_role]
  cudaStream_t p2p = nullptr;      // pipeline messages' copies
  cudaStream_t release = nullptr;  // frees, behind a fence of every other stream
  std::vector<gm::device_params> params;  // [chunk]
  std::vector<cudaEvent_t> op_start, op_end;  // [op of the rank's program], timing enabled
  // Communication ops: the end of the send half and the start of the receive half (after the stream
  // waited for the peers' rows). Between the two the op's stream only waits.
  std::vector<cudaEvent_t> op_sent, op_arrived;
  std::vector<std::uint8_t> wait_measured;  // [op]: both recorded this step (rows from this process only)
  cudaEvent_t step_begin = nullptr;
  gm::dtensor load;  // fp32 [chunk][layer][expert] routed copies this step
  gm::dtensor loss;  // one double: the step's summed cross-entropy
  std::vector<cudaStream_t> all_streams() const {
    std::vector<cudaStream_t> out{p2p};
    for (const auto& chunk : lanes)
      for (const auto& lane : chunk) out.push_back(lane.stream);
    return out;
  }
  ~device_rank() {
    if (gpu) cudaSetDevice(gpu->device);
    // Everything enqueued must finish before the streams and the memory they use go away.
    for (auto s : all_streams())
      if (s) cudaStreamSynchronize(s);
    params.clear();
    load.reset();
    loss.reset();
    if (release) cudaStreamSynchronize(release);
    for (auto& chunk : lanes)
      for (auto& lane : chunk) {
        lane.gemm.reset();
        if (lane.stream) cudaStreamDestroy(lane.stream);
      }
    for (auto s : {p2p, release})
      if (s) cudaStreamDestroy(s);
    for (auto* list : {&op_start, &op_end, &op_sent, &op_arrived})
      for (auto e : *list) cudaEventDestroy(e);
    if (step_begin) cudaEventDestroy(step_begin);
  }
};

struct device_run {
  std::vector<gm::device_layer_state> layers;
  gm::device_head_state head;
  gm::dtensor ids, targets;  // this rank's tokens (first and last stages)
  gm::dtensor input_grad;    // the chunk input's gradient, to send backward
  std::vector<gm::shared_event> inputs_ready;  // pipeline inputs and handovers: wait before any op
};

namespace {

// The CUDA runtime's current device is per thread, and actors run on whichever worker thread CAF
// picks: every entry point makes the rank's GPU current before touching streams or memory.
expected<void> use_device(const rank_context& ctx) {
  return check(cudaSetDevice(ctx.gpu->gpu->device), "cudaSetDevice");
}

std::string where(const rank_context& ctx, const op_request& op) {
  return "rank " + std::to_string(ctx.pipeline_rank) + (ctx.ep.ep > 1 ? " (ep " + std::to_string(ctx.ep_index) + ")" : "") + ", " +
         to_string(static_cast<op_kind>(op.kind)) + " of chunk " + std::to_string(op.chunk) + " layer " + std::to_string(op.layer) +
         " microbatch " + std::to_string(op.microbatch) + " on the GPU";
}

expected<void> located(const rank_context& ctx, const op_request& op, expected<void> r) {
  if (r) return r;
  return unexpected(r.error().code, where(ctx, op) + ": " + r.error().message);
}

device_run& gpu_run(rank_context& ctx, int chunk, int microbatch) {
  chunk_run& run = ctx.run(chunk, microbatch);
  if (!run.gpu) {
    run.gpu = std::make_shared<device_run>();
    run.gpu->layers.resize(ctx.layers_per_chunk);
  }
  return *run.gpu;
}

// Makes `target` wait until every stream of the rank has done what was enqueued on it so far.
expected<void> fence(device_rank& g, cudaStream_t target) {
  for (auto s : g.all_streams()) {
    if (s == target) continue;
    auto ev = gm::record_event(s);
    if (!ev) return forward_error(ev);
    if (auto ok = check(cudaStreamWaitEvent(target, ev->get(), 0), "fencing the rank's streams"); !ok) return ok;
  }
  return {};
}

gm::layer_call call_of(rank_context& ctx, const op_request& op, component_lane& lane) {
  device_rank& g = *ctx.gpu;
  const auto& c = ctx.chunks[op.chunk];
  gm::layer_call lc;
  lc.shape = &ctx.shape;
  lc.ep = ctx.ep.ep;
  lc.ep_index = ctx.ep_index;
  lc.seqs = ctx.seqs;
  lc.first_token = ctx.ep_index * ctx.seqs * ctx.shape.seq_len;
  lc.token_seed = model::token_seed(ctx.seed, ctx.step, c.microbatch_offset + op.microbatch, c.first_layer + op.layer);
  lc.params = op.layer < static_cast<int>(c.slots.size()) ? &g.params[op.chunk].layer(op.layer) : nullptr;
  lc.pool = &g.gpu->pool;
  lc.gemm = lane.gemm.get();
  lc.stream = lane.stream;
  // The overlap recipe's SM budget: comm kernels keep to it, and compute beside them leaves it free.
  if (is_comm(static_cast<op_kind>(op.kind))) lc.max_blocks = op.sms;
  else if (op.sms > 0) lc.compute_sms = std::max(1, g.gpu->sms - op.sms);
  lc.readback = lane.readback ? &*lane.readback : nullptr;
  lc.load = gm::ptr<float>(g.load) + (static_cast<std::size_t>(op.chunk) * ctx.layers_per_chunk + op.layer) * ctx.shape.experts;
  return lc;
}

// Before an op: its stream waits for the ops it depends on and for its (chunk, microbatch)'s inputs.
expected<void> prepare(rank_context& ctx, const op_request& op, component_lane& lane, device_run& run) {
  device_rank& g = *ctx.gpu;
  for (int d : op.after)
    if (auto ok = check(cudaStreamWaitEvent(lane.stream, g.op_end.at(d), 0), "waiting for an earlier op"); !ok) return ok;
  for (const auto& ev : run.inputs_ready)
    if (auto ok = check(cudaStreamWaitEvent(lane.stream, ev.get(), 0), "waiting for a pipeline input"); !ok) return ok;
  return check(cudaEventRecord(g.op_start.at(op.index), lane.stream), "cudaEventRecord");
}

expected<void> finish(rank_context& ctx, const op_request& op, component_lane& lane) {
  return check(cudaEventRecord(ctx.gpu->op_end.at(op.index), lane.stream), "cudaEventRecord");
}

// The first and last stages need this rank's tokens: made on the host as on the CPU, copied up once.
expected<void> ensure_tokens(rank_context& ctx, const op_request& op, chunk_run& run, device_run& dev, const gm::layer_call& lc) {
  if (dev.ids) return {};
  const auto& c = ctx.chunks[op.chunk];
  if (run.tokens.ids.empty())
    run.tokens = model::synthetic_tokens(ctx.seed, ctx.step, c.microbatch_offset + op.microbatch, ctx.ep_index * ctx.seqs, ctx.seqs,
                                         ctx.shape.seq_len, ctx.shape.vocab);
  for (auto [t, v] : {std::pair{&dev.ids, &run.tokens.ids}, std::pair{&dev.targets, &run.tokens.targets}}) {
    auto a = gm::allocate(*lc.pool, v->size() * sizeof(int), lc.stream);
    if (!a) return forward_error(a);
    *t = std::move(*a);
    if (auto ok = check(cudaMemcpyAsync(t->get()->data(), v->data(), v->size() * sizeof(int), cudaMemcpyHostToDevice, lc.stream),
                        "uploading tokens");
        !ok)
      return ok;
  }
  return {};
}

expected<void> compute(rank_context& ctx, const op_request& op, component_lane& lane, chunk_run& run, device_run& dev) {
  device_rank& g = *ctx.gpu;
  const auto lc = call_of(ctx, op, lane);
  const auto& edges = g.params[op.chunk].edges();
  const int L = ctx.layers_per_chunk;
  switch (static_cast<op_kind>(op.kind)) {
    case op_kind::embed_f:
      if (auto ok = ensure_tokens(ctx, op, run, dev, lc); !ok) return ok;
      return gm::embed_forward(lc, edges, gm::ptr<int>(dev.ids), dev.layers[0].x);
    case op_kind::attn_f: return gm::attention_forward(lc, dev.layers[op.layer]);
    case op_kind::mlp_f: {
      auto& s = dev.layers[op.layer];
      {
        std::lock_guard<std::mutex> lock(ctx.stats_mutex);
        ctx.expert_rows += s.expert_offsets.empty() ? 0 : s.expert_offsets.back();
      }
      return gm::mlp_forward(lc, s);
    }
    case op_kind::head_f:
      if (auto ok = ensure_tokens(ctx, op, run, dev, lc); !ok) return ok;
      dev.head.y = std::move(dev.layers[L - 1].y);
      return gm::head_forward(lc, edges, gm::ptr<int>(dev.targets), static_cast<float>(1.0 / ctx.total_tokens), dev.head,
                              gm::ptr<double>(g.loss));
    case op_kind::head_b: return gm::head_backward_input(lc, edges, dev.head, dev.layers[L - 1].dy);
    case op_kind::head_w: return gm::head_backward_weight(lc, edges, dev.head);
    case op_kind::mlp_b: return gm::mlp_backward_input(lc, dev.layers[op.layer]);
    case op_kind::mlp_w: return gm::mlp_backward_weight(lc, dev.layers[op.layer]);
    case op_kind::attn_b: {
      auto& s = dev.layers[op.layer];
      if (auto ok = gm::attention_backward_input(lc, s); !ok) return ok;
      if (op.layer > 0) dev.layers[op.layer - 1].dy = s.dx;
      else dev.input_grad = s.dx;
      return {};
    }
    case op_kind::attn_w: return gm::attention_backward_weight(lc, dev.layers[op.layer]);
    case op_kind::embed_w:
      if (auto ok = ensure_tokens(ctx, op, run, dev, lc); !ok) return ok;
      return gm::embed_backward_weight(lc, edges, gm::ptr<int>(dev.ids), dev.input_grad);
    default: return unexpected(errc::internal, "not a compute op");
  }
}

payload wrap(gm::device_block b) {
  payload p;
  p.device_bytes = static_cast<std::size_t>(b.row_count) * 2;  // times hidden below
  p.device = std::make_shared<gm::device_block>(std::move(b));
  return p;
}

expected<gm::device_block> unwrap(payload& p) {
  if (!p.device) return unexpected(errc::internal, "a payload without device rows reached the cuda backend");
  auto b = std::static_pointer_cast<gm::device_block>(p.device);
  p.device.reset();
  return std::move(*b);
}

}  // namespace

int gpu_count() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess ? count : 0;
}

expected<std::shared_ptr<device_gpu>> open_gpu(int device) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0)
    return unexpected(errc::unavailable, "the cuda backend needs a GPU, and this machine has none (try backend = \"cpu\")");
  if (device < 0 || device >= count)
    return unexpected(errc::invalid_argument, "GPU " + std::to_string(device) + " does not exist (this machine has " + std::to_string(count) + ")");
  if (auto ok = check(cudaSetDevice(device), "cudaSetDevice"); !ok) return forward_error(ok);
  auto gpu = std::make_shared<device_gpu>();
  gpu->device = device;
  if (auto ok = check(cudaDeviceGetAttribute(&gpu->sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute"); !ok)
    return forward_error(ok);
  auto pool = cuda::device_pool::create(device);
  if (!pool) return forward_error(pool);
  gpu->pool = std::move(*pool);
  return gpu;
}

expected<void> attach_gpu(rank_context& ctx, std::shared_ptr<device_gpu> gpu, int program_ops) {
  if (auto ok = check(cudaSetDevice(gpu->device), "cudaSetDevice"); !ok) return ok;
  auto g = std::make_shared<device_rank>();
  g->gpu = std::move(gpu);
  int least = 0, greatest = 0;  // numerically: greatest is the highest priority
  if (auto ok = check(cudaDeviceGetStreamPriorityRange(&least, &greatest), "cudaDeviceGetStreamPriorityRange"); !ok) return ok;
  g->lanes.resize(ctx.chunks.size());
  for (auto& chunk : g->lanes)
    for (int role = 0; role < 4; ++role) {
      const bool comm = role == static_cast<int>(component_role::dispatch) || role == static_cast<int>(component_role::combine);
      if (auto ok = check(cudaStreamCreateWithPriority(&chunk[role].stream, cudaStreamNonBlocking, comm ? greatest : least),
                          "cudaStreamCreate");
          !ok)
        return ok;
      auto handle = cuda::blas::create();
      if (!handle) return forward_error(handle);
      chunk[role].gemm = std::move(*handle);
      if (comm) {
        auto readback = gm::host_readback::create();
        if (!readback) return forward_error(readback);
        chunk[role].readback = std::move(*readback);
      }
    }
  for (auto* s : {&g->p2p, &g->release})
    if (auto ok = check(cudaStreamCreateWithPriority(s, cudaStreamNonBlocking, greatest), "cudaStreamCreate"); !ok) return ok;
  for (auto* list : {&g->op_start, &g->op_end, &g->op_sent, &g->op_arrived}) list->assign(program_ops, nullptr);
  g->wait_measured.assign(program_ops, 0);
  for (auto* list : {&g->op_start, &g->op_end, &g->op_sent, &g->op_arrived})
    for (auto& e : *list)
      if (auto ok = check(cudaEventCreate(&e), "cudaEventCreate"); !ok) return ok;
  if (auto ok = check(cudaEventCreate(&g->step_begin), "cudaEventCreate"); !ok) return ok;
  auto& pool = g->gpu->pool;
  for (auto& c : ctx.chunks) {
    auto p = gm::device_params::create(pool, ctx.shape, *c.params, c.slots, g->release);
    if (!p) return forward_error(p);
    g->params.push_back(std::move(*p));
  }
  const std::size_t load_n = ctx.chunks.size() * static_cast<std::size_t>(ctx.layers_per_chunk) * ctx.shape.experts;
  auto load = gm::allocate(pool, load_n * sizeof(float), g->release);
  auto loss = gm::allocate(pool, sizeof(double), g->release);
  if (!load) return forward_error(load);
  if (!loss) return forward_error(loss);
  g->load = std::move(*load);
  g->loss = std::move(*loss);
  if (auto ok = check(cudaStreamSynchronize(g->release), "setting up the GPU"); !ok) return ok;
  ctx.gpu = std::move(g);
  return {};
}

expected<void> gpu_compute(rank_context& ctx, const op_request& op) {
  if (auto ok = use_device(ctx); !ok) return located(ctx, op, ok);
  auto& lane = ctx.gpu->lanes.at(op.chunk)[static_cast<int>(role_of(static_cast<op_kind>(op.kind)))];
  chunk_run& run = ctx.run(op.chunk, op.microbatch);
  device_run& dev = gpu_run(ctx, op.chunk, op.microbatch);
  if (auto ok = prepare(ctx, op, lane, dev); !ok) return located(ctx, op, ok);
  if (auto ok = compute(ctx, op, lane, run, dev); !ok) return located(ctx, op, ok);
  return located(ctx, op, finish(ctx, op, lane));
}

expected<std::vector<payload>> gpu_exchange_out(rank_context& ctx, const op_request& op) {
  if (auto ok = use_device(ctx); !ok) return forward_error(located(ctx, op, ok));
  auto& lane = ctx.gpu->lanes.at(op.chunk)[static_cast<int>(role_of(static_cast<op_kind>(op.kind)))];
  device_run& dev = gpu_run(ctx, op.chunk, op.microbatch);
  if (auto ok = prepare(ctx, op, lane, dev); !ok) return forward_error(located(ctx, op, ok));
  const auto lc = call_of(ctx, op, lane);
  auto& s = dev.layers[op.layer];
  expected<std::vector<gm::device_block>> blocks = std::vector<gm::device_block>{};
  switch (static_cast<op_kind>(op.kind)) {
    case op_kind::dispatch_f: blocks = gm::dispatch_send(lc, s); break;
    case op_kind::combine_f: blocks = gm::combine_send(lc, s); break;
    case op_kind::combine_b: blocks = gm::combine_backward_send(lc, s); break;
    case op_kind::dispatch_b: blocks = gm::dispatch_backward_send(lc, s); break;
    default: return unexpected(errc::internal, where(ctx, op) + ": not a communication op");
  }
  if (!blocks) return forward_error(located(ctx, op, forward_error(blocks)));
  if (auto ok = check(cudaEventRecord(ctx.gpu->op_sent.at(op.index), lane.stream), "cudaEventRecord"); !ok)
    return forward_error(located(ctx, op, ok));
  std::vector<payload> out;
  for (auto& b : *blocks) {
    out.push_back(wrap(std::move(b)));
    out.back().device_bytes *= static_cast<std::size_t>(ctx.shape.hidden);
  }
  return out;
}

expected<void> gpu_exchange_in(rank_context& ctx, const op_request& op, std::vector<payload> from) {
  if (auto ok = use_device(ctx); !ok) return located(ctx, op, ok);
  auto& lane = ctx.gpu->lanes.at(op.chunk)[static_cast<int>(role_of(static_cast<op_kind>(op.kind)))];
  device_run& dev = gpu_run(ctx, op.chunk, op.microbatch);
  const auto lc = call_of(ctx, op, lane);
  auto& s = dev.layers[op.layer];
  // The receive half starts once the peers' rows on this GPU are written. Rows from other processes
  // were staged through the host or moved by the transport, work no GPU event of ours covers: then the
  // whole op counts as communication.
  const bool same_process = std::all_of(from.begin(), from.end(), [](const payload& p) { return p.device != nullptr; });
  if (same_process) {
    for (const auto& p : from)
      if (const auto& ready = std::static_pointer_cast<gm::device_block>(p.device)->ready)
        if (auto ok = check(cudaStreamWaitEvent(lane.stream, ready.get(), 0), "waiting for a peer's rows"); !ok)
          return located(ctx, op, ok);
    if (auto ok = check(cudaEventRecord(ctx.gpu->op_arrived.at(op.index), lane.stream), "cudaEventRecord"); !ok)
      return located(ctx, op, ok);
    ctx.gpu->wait_measured.at(op.index) = 1;
  }
  std::vector<gm::device_block> blocks;
  for (auto& p : from) {
    if (auto ok = gpu_enter_process(ctx, p); !ok) return located(ctx, op, ok);  // from another process
    auto b = unwrap(p);
    if (!b) return located(ctx, op, forward_error(b));
    blocks.push_back(std::move(*b));
  }
  expected<void> r;
  switch (static_cast<op_kind>(op.kind)) {
    case op_kind::dispatch_f: r = gm::dispatch_receive(lc, s, std::move(blocks)); break;
    case op_kind::combine_f:
      r = gm::combine_receive(lc, s, std::move(blocks));
      if (r && op.layer + 1 < ctx.layers_per_chunk) dev.layers[op.layer + 1].x = s.y;
      break;
    case op_kind::combine_b: r = gm::combine_backward_receive(lc, s, std::move(blocks)); break;
    case op_kind::dispatch_b: r = gm::dispatch_backward_receive(lc, s, std::move(blocks)); break;
    default: return unexpected(errc::internal, where(ctx, op) + ": not a communication op");
  }
  if (!r) return located(ctx, op, r);
  return located(ctx, op, finish(ctx, op, lane));
}

// Makes `target` wait for the end of each op in `ops` (the rank's program indices).
expected<void> wait_ops(device_rank& g, cudaStream_t target, const std::vector<int>& ops) {
  for (int i : ops)
    if (auto ok = check(cudaStreamWaitEvent(target, g.op_end.at(i), 0), "waiting for the producing ops"); !ok) return ok;
  return {};
}

expected<payload> gpu_pipeline_out(rank_context& ctx, int chunk, int microbatch, bool gradient, const std::vector<int>& producers) {
  if (auto ok = use_device(ctx); !ok) return forward_error(ok);
  device_rank& g = *ctx.gpu;
  device_run& dev = gpu_run(ctx, chunk, microbatch);
  const gm::dtensor& src = gradient ? dev.input_grad : dev.head.y ? dev.head.y : dev.layers.back().y;
  if (!src) return unexpected(errc::internal, "rank " + std::to_string(ctx.pipeline_rank) + ": no " +
                                                   (gradient ? "input gradient" : "output") + " of chunk " + std::to_string(chunk) +
                                                   " microbatch " + std::to_string(microbatch) + " to send");
  // The copy waits for the ops of the action that produced the data, and for nothing later.
  if (auto ok = wait_ops(g, g.p2p, producers); !ok) return forward_error(ok);
  auto copy = gm::allocate(g.gpu->pool, src->bytes(), g.p2p);
  if (!copy) return forward_error(copy);
  if (auto ok = check(cudaMemcpyAsync((*copy)->data(), src->data(), src->bytes(), cudaMemcpyDeviceToDevice, g.p2p), "pipeline copy"); !ok)
    return forward_error(ok);
  auto ready = gm::record_event(g.p2p);
  if (!ready) return forward_error(ready);
  const int rows = ctx.seqs * ctx.shape.seq_len;
  payload p = wrap(gm::device_block{std::move(*copy), 0, rows, {}, std::move(*ready)});
  p.device_bytes = src->bytes();
  return p;
}

expected<void> gpu_pipeline_in(rank_context& ctx, int chunk, int microbatch, bool gradient, payload p) {
  if (auto ok = use_device(ctx); !ok) return ok;
  if (auto ok = gpu_enter_process(ctx, p); !ok) return ok;  // from another process
  auto b = unwrap(p);
  if (!b) return forward_error(b);
  device_run& dev = gpu_run(ctx, chunk, microbatch);
  if (gradient) dev.layers.back().dy = std::move(b->rows);
  else dev.layers.front().x = std::move(b->rows);
  if (b->ready) dev.inputs_ready.push_back(std::move(b->ready));
  return {};
}

expected<void> gpu_handover(rank_context& ctx, const handover& h, const std::vector<int>& producers) {
  if (auto ok = use_device(ctx); !ok) return ok;
  device_rank& g = *ctx.gpu;
  device_run& from = gpu_run(ctx, h.from_chunk, h.microbatch);
  device_run& to = gpu_run(ctx, h.to_chunk, h.microbatch);
  // The consumer runs on the other chunk's streams: it waits for the producing action's ops, through
  // one event on the rank's pipeline stream.
  if (auto ok = wait_ops(g, g.p2p, producers); !ok) return ok;
  auto ev = gm::record_event(g.p2p);
  if (!ev) return forward_error(ev);
  to.inputs_ready.push_back(std::move(*ev));
  if (h.gradient) to.layers.back().dy = std::move(from.input_grad);
  else to.layers.front().x = from.head.y ? std::move(from.head.y) : std::move(from.layers.back().y);
  return {};
}

namespace {
// A staged device_block in a host payload: i = {magic, row_begin, row_count, bytes (two words),
// counts...}, f = the rows' bytes (bf16 pairs, so a whole number of floats).
constexpr std::int32_t staged_magic = 0x4c4d5242;  // "LMRB"
// Rows that travel as a device_buffer (payload::wire): i = {magic, row_begin, row_count, counts...}.
constexpr std::int32_t wire_magic = 0x4c4d5257;  // "LMRW"
}  // namespace

expected<void> gpu_leave_process(rank_context& ctx, payload& p) {
  if (!p.device) return {};
  auto b = unwrap(p);
  if (!b) return forward_error(b);
  if (auto ok = use_device(ctx); !ok) return ok;
  // Only the block's own rows travel (an exchange's blocks are ranges of one buffer): bf16 rows of
  // `hidden`, which then start at row 0 on the receiver.
  const std::size_t row_bytes = static_cast<std::size_t>(ctx.shape.hidden) * 2;
  std::size_t offset = 0, bytes = b->rows ? b->rows->bytes() : 0;
  if (b->rows && static_cast<std::size_t>(b->row_begin + b->row_count) * row_bytes <= bytes) {
    offset = static_cast<std::size_t>(b->row_begin) * row_bytes;
    bytes = static_cast<std::size_t>(b->row_count) * row_bytes;
    b->row_begin = 0;
  }
  auto* first = b->rows ? static_cast<char*>(b->rows->data()) + offset : nullptr;
  if (ctx.net.moves_device_buffers()) {  // nccl: the rows stay on the GPU
    payload header;
    header.i = {wire_magic, b->row_begin, b->row_count};
    header.i.insert(header.i.end(), b->counts.begin(), b->counts.end());
    auto w = std::make_shared<device_buffer>();
    w->data = first;
    w->bytes = bytes;
    w->device = ctx.gpu->gpu->device;
    w->ready = b->ready.get();
    w->keep = std::make_shared<std::pair<gm::dtensor, gm::shared_event>>(b->rows, b->ready);
    if (b->rows) w->retire = [rows = b->rows](void* stream) { rows->retire_on(static_cast<cudaStream_t>(stream)); };
    header.wire = std::move(w);
    p = std::move(header);
    return {};
  }
  payload host;
  host.i = {staged_magic, b->row_begin, b->row_count, static_cast<std::int32_t>(bytes & 0x7fffffff),
            static_cast<std::int32_t>(bytes >> 31)};
  host.i.insert(host.i.end(), b->counts.begin(), b->counts.end());
  host.f.resize((bytes + 3) / 4);
  if (bytes > 0) {
    if (b->ready)
      if (auto ok = check(cudaEventSynchronize(b->ready.get()), "waiting for rows to send"); !ok) return ok;
    // Pageable memory: the driver stages it through its own pinned buffers; the call returns when done.
    if (auto ok = check(cudaMemcpy(host.f.data(), first, bytes, cudaMemcpyDeviceToHost), "copying rows to the host"); !ok)
      return ok;
  }
  p = std::move(host);
  return {};
}

expected<void> gpu_enter_process(rank_context& ctx, payload& p) {
  if (!p.device)
    if (auto ok = use_device(ctx); !ok) return ok;
  if (p.device) return {};
  if (!p.i.empty() && p.i[0] == wire_magic) {  // nccl: adopt the memory the transport received into
    if (p.i.size() < 3) return unexpected(errc::transport_error, "a GPU rows header arrived truncated");
    device_rank& g = *ctx.gpu;
    gm::device_block b;
    b.row_begin = p.i[1];
    b.row_count = p.i[2];
    b.counts.assign(p.i.begin() + 3, p.i.end());
    std::size_t bytes = 0;
    if (p.wire) {
      bytes = p.wire->bytes;
      if (bytes > 0 && !p.wire->data)
        return unexpected(errc::transport_error, "rank " + std::to_string(ctx.pipeline_rank) + ": GPU rows did not arrive (see the transport's message)");
      if (bytes > 0) {
        b.rows = std::make_shared<gm::device_memory>(&g.gpu->pool, p.wire->data, bytes, g.p2p);
        p.wire->data = nullptr;  // ours now: freed stream-ordered like any tensor of the rank
      }
      if (p.wire->ready) {
        // The event belongs to the transport's buffer: keep that alive as long as the event is used.
        auto keep = p.wire;
        b.ready = gm::shared_event(static_cast<cudaEvent_t>(p.wire->ready), [keep](cudaEvent_t) {});
      }
    } else if (b.row_count > 0) {
      return unexpected(errc::transport_error, "rank " + std::to_string(ctx.pipeline_rank) + ": GPU rows did not arrive (see the transport's message)");
    }
    payload out = wrap(std::move(b));
    out.device_bytes = bytes;
    p = std::move(out);
    return {};
  }
  if (p.i.size() < 5 || p.i[0] != staged_magic)
    return unexpected(errc::transport_error, "rank " + std::to_string(ctx.pipeline_rank) +
                                                 ": a host payload arrived where GPU rows were expected (is every rank on the cuda backend?)");
  device_rank& g = *ctx.gpu;
  const std::size_t bytes = static_cast<std::size_t>(static_cast<std::uint32_t>(p.i[3])) |
                            (static_cast<std::size_t>(static_cast<std::uint32_t>(p.i[4])) << 31);
  if (p.f.size() * 4 < bytes) return unexpected(errc::transport_error, "staged GPU rows arrived truncated");
  gm::device_block b;
  b.row_begin = p.i[1];
  b.row_count = p.i[2];
  b.counts.assign(p.i.begin() + 5, p.i.end());
  if (bytes > 0) {
    auto rows = gm::allocate(g.gpu->pool, bytes, g.p2p);
    if (!rows) return forward_error(rows);
    // Pageable source: the call returns once the data is staged, so `p` may go away after it.
    if (auto ok = check(cudaMemcpyAsync((*rows)->data(), p.f.data(), bytes, cudaMemcpyHostToDevice, g.p2p), "copying rows to the GPU"); !ok)
      return ok;
    b.rows = std::move(*rows);
  }
  auto ready = gm::record_event(g.p2p);
  if (!ready) return forward_error(ready);
  b.ready = std::move(*ready);
  payload out = wrap(std::move(b));
  out.device_bytes = bytes;
  p = std::move(out);
  return {};
}

expected<void> gpu_begin_step(rank_context& ctx) {
  if (!ctx.gpu)
    return unexpected(errc::unavailable, "this rank has no GPU: the cuda backend runs its virtual ranks in one process (GPU data "
                                         "between processes needs the nccl transport)");
  device_rank& g = *ctx.gpu;
  if (auto ok = use_device(ctx); !ok) return ok;
  if (auto ok = check(cudaMemsetAsync(g.load->data(), 0, g.load->bytes(), g.release), "clearing the load counters"); !ok) return ok;
  if (auto ok = check(cudaMemsetAsync(g.loss->data(), 0, sizeof(double), g.release), "clearing the loss"); !ok) return ok;
  if (auto ok = check(cudaStreamSynchronize(g.release), "starting the step"); !ok) return ok;
  std::fill(g.wait_measured.begin(), g.wait_measured.end(), 0);
  return check(cudaEventRecord(g.step_begin, g.release), "cudaEventRecord");
}

expected<void> gpu_end_step(rank_context& ctx, std::vector<op_timing>& timings) {
  if (auto ok = use_device(ctx); !ok) return ok;
  device_rank& g = *ctx.gpu;
  for (auto s : g.all_streams())
    if (auto ok = check(cudaStreamSynchronize(s), "finishing the step on the GPU"); !ok) return ok;
  double loss = 0;
  std::vector<float> load(g.load->bytes() / sizeof(float));
  if (auto ok = check(cudaMemcpy(&loss, g.loss->data(), sizeof(double), cudaMemcpyDeviceToHost), "reading the loss"); !ok) return ok;
  if (auto ok = check(cudaMemcpy(load.data(), g.load->data(), g.load->bytes(), cudaMemcpyDeviceToHost), "reading the load"); !ok) return ok;
  {
    std::lock_guard<std::mutex> lock(ctx.stats_mutex);
    ctx.loss_sum += loss;
    for (std::size_t i = 0; i < load.size() && i < ctx.load.size(); ++i) ctx.load[i] += load[i];
  }
  // Component ops' times are the GPU's: from the step's start event to their own.
  for (auto& t : timings) {
    if (t.index < 0 || t.index >= static_cast<int>(g.op_start.size())) continue;
    float start_ms = 0, end_ms = 0;
    if (cudaEventElapsedTime(&start_ms, g.step_begin, g.op_start[t.index]) != cudaSuccess ||
        cudaEventElapsedTime(&end_ms, g.step_begin, g.op_end[t.index]) != cudaSuccess)
      continue;  // a pipeline message: no events, host times stay
    t.start_ns = static_cast<std::int64_t>(static_cast<double>(start_ms) * 1e6);
    t.end_ns = static_cast<std::int64_t>(static_cast<double>(end_ms) * 1e6);
    // A comm op's wait in GPU time too (host times would not line up with these).
    float sent_ms = 0, arrived_ms = 0;
    if (t.wait_end_ns > 0 && g.wait_measured[t.index] &&
        cudaEventElapsedTime(&sent_ms, g.step_begin, g.op_sent[t.index]) == cudaSuccess &&
        cudaEventElapsedTime(&arrived_ms, g.step_begin, g.op_arrived[t.index]) == cudaSuccess && arrived_ms >= sent_ms) {
      t.wait_start_ns = static_cast<std::int64_t>(static_cast<double>(sent_ms) * 1e6);
      t.wait_end_ns = static_cast<std::int64_t>(static_cast<double>(arrived_ms) * 1e6);
    } else {
      t.wait_start_ns = t.wait_end_ns = 0;
    }
  }
  cudaGetLastError();  // the elapsed-time queries of unrecorded events leave an error behind
  for (std::size_t c = 0; c < ctx.chunks.size(); ++c)
    if (auto ok = g.params[c].download_grads(*ctx.chunks[c].params, g.release); !ok) return ok;
  return {};
}

expected<void> gpu_upload(rank_context& ctx) {
  if (auto ok = use_device(ctx); !ok) return ok;
  device_rank& g = *ctx.gpu;
  for (std::size_t c = 0; c < ctx.chunks.size(); ++c)
    if (auto ok = g.params[c].upload(*ctx.chunks[c].params, ctx.chunks[c].slots, g.release); !ok) return ok;
  return {};
}

std::int64_t gpu_bytes(const chunk_run& run) {
  if (!run.gpu) return 0;
  std::size_t n = run.gpu->head.bytes() + gm::bytes_of(run.gpu->ids) + gm::bytes_of(run.gpu->targets) + gm::bytes_of(run.gpu->input_grad);
  for (const auto& l : run.gpu->layers) n += l.bytes();
  return static_cast<std::int64_t>(n);
}

void gpu_release(rank_context& ctx, chunk_run& run) {
  if (!ctx.gpu || !run.gpu) return;
  cudaSetDevice(ctx.gpu->gpu->device);  // no error to report here: a failure shows at the next op
  device_rank& g = *ctx.gpu;
  if (!fence(g, g.release)) {  // cannot order the frees: wait instead (the step has failed anyway)
    for (auto s : g.all_streams()) cudaStreamSynchronize(s);
  }
  for (const auto& l : run.gpu->layers) l.retire_on(g.release);
  run.gpu->head.retire_on(g.release);
  for (const auto* t : {&run.gpu->ids, &run.gpu->targets, &run.gpu->input_grad})
    if (*t) (*t)->retire_on(g.release);
  run.gpu.reset();
}

}  // namespace loom::actors
