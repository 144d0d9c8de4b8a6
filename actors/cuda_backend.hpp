// The `cuda` backend of the component actors: a rank's model on one GPU.
//
// Each component actor of a chunk owns a CUDA stream (the communication components' streams have the
// higher priority) and a cuBLASLt handle. An op enqueues its kernels and answers at once: the actor
// never waits for the GPU, and ops that depend on it wait on its end event, named in their request
// (op_request::after). Pipeline messages between virtual ranks are device-to-device copies on a
// per-rank stream, handed over with the event that marks them written; the expert-parallel all-to-all
// is device copies on the comm components' streams (kernels/cuda/model/moe_layer.hpp). In an overlapped
// pair the comm kernels keep to the recipe's SMs and the compute GEMMs leave those SMs free. Device memory
// comes from one stream-ordered pool per GPU, so after the first step nothing on the hot path asks the
// driver for memory.
//
// The host param_set stays the master copy (gradient sums, the optimizer and expert migration run on
// it): at the end of a step the gradients come down, after the optimizer the values go up.
//
// Built without CUDA, every entry point returns errc::unavailable.
#pragma once

#include <memory>
#include <vector>

#include "actors/messages.hpp"
#include "actors/program.hpp"
#include "actors/rank_context.hpp"

namespace loom::actors {

// One GPU of this process, shared by the virtual ranks placed on it.
struct device_gpu;
int gpu_count();  // usable GPUs (0 without a driver or without CUDA in the build)
expected<std::shared_ptr<device_gpu>> open_gpu(int device);

// Gives `ctx` its GPU state: streams, events for `program_ops` ops, device parameters of its chunks.
expected<void> attach_gpu(rank_context& ctx, std::shared_ptr<device_gpu> gpu, int program_ops);

// Component ops, as component_work.hpp's, on the device.
expected<void> gpu_compute(rank_context& ctx, const op_request& op);
expected<std::vector<payload>> gpu_exchange_out(rank_context& ctx, const op_request& op);
expected<void> gpu_exchange_in(rank_context& ctx, const op_request& op, std::vector<payload> from);

// Pipeline messages: the chunk's output (or its input's gradient) as a payload holding a device copy
// made once the ops of the producing action (`producers`) are done, and a received one placed as the
// chunk's input (or its output's gradient).
expected<payload> gpu_pipeline_out(rank_context& ctx, int chunk, int microbatch, bool gradient, const std::vector<int>& producers);
expected<void> gpu_pipeline_in(rank_context& ctx, int chunk, int microbatch, bool gradient, payload p);
// The turn of a V-shaped pipeline: one local chunk's output becomes another's input.
expected<void> gpu_handover(rank_context& ctx, const handover& h, const std::vector<int>& producers);

// Across processes (a transport that does not carry device memory): before a send, a payload of GPU
// rows becomes what the transport moves, and on arrival GPU rows again (consumers wait on its event).
// - `nccl` (moves_device_buffers): the rows stay on the GPU as a device_buffer, the row ranges and
//   counts go in the header; the receiver adopts the memory the transport received into.
// - `ucx`: host data: one device-to-host copy after the rows' event, one host-to-device copy on the
//   rank's pipeline stream on arrival.
// A host payload passes through unchanged.
expected<void> gpu_leave_process(rank_context& ctx, payload& p);
expected<void> gpu_enter_process(rank_context& ctx, payload& p);

// Step boundaries. The end waits for the GPU once: it reads the loss and expert load, turns the op
// timings into GPU times (since the step began) and brings the gradients down into the host params.
expected<void> gpu_begin_step(rank_context& ctx);
expected<void> gpu_end_step(rank_context& ctx, std::vector<op_timing>& timings);
// After the host params changed (optimizer step, expert migration): copies values and slot maps up.
expected<void> gpu_upload(rank_context& ctx);
// Frees a (chunk, microbatch)'s device state once every stream of the rank is past its uses.
void gpu_release(rank_context& ctx, chunk_run& run);
// Device memory a (chunk, microbatch) holds.
std::int64_t gpu_bytes(const chunk_run& run);

}  // namespace loom::actors
