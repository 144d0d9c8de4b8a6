// The cuda backend in a build without CUDA (LOOM_CUDA=OFF or no nvcc): every entry point says so.
#include "actors/cuda_backend.hpp"

namespace loom::actors {

namespace {
unexpected not_built() {
  return unexpected(errc::unavailable, "the cuda backend is not part of this build (loom was built without CUDA)");
}
}  // namespace

struct device_gpu {};

int gpu_count() { return 0; }
expected<std::shared_ptr<device_gpu>> open_gpu(int) { return not_built(); }
expected<void> attach_gpu(rank_context&, std::shared_ptr<device_gpu>, int) { return not_built(); }
expected<void> gpu_compute(rank_context&, const op_request&) { return not_built(); }
expected<std::vector<payload>> gpu_exchange_out(rank_context&, const op_request&) { return not_built(); }
expected<void> gpu_exchange_in(rank_context&, const op_request&, std::vector<payload>) { return not_built(); }
expected<payload> gpu_pipeline_out(rank_context&, int, int, bool, const std::vector<int>&) { return not_built(); }
expected<void> gpu_pipeline_in(rank_context&, int, int, bool, payload) { return not_built(); }
expected<void> gpu_handover(rank_context&, const handover&, const std::vector<int>&) { return not_built(); }
expected<void> gpu_leave_process(rank_context&, payload&) { return not_built(); }
expected<void> gpu_enter_process(rank_context&, payload&) { return not_built(); }
expected<void> gpu_begin_step(rank_context&) { return not_built(); }
expected<void> gpu_end_step(rank_context&, std::vector<op_timing>&) { return not_built(); }
expected<void> gpu_upload(rank_context&) { return not_built(); }
void gpu_release(rank_context&, chunk_run&) {}
std::int64_t gpu_bytes(const chunk_run&) { return 0; }

}  // namespace loom::actors
