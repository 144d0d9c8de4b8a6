// The `nccl` transport in a build without NCCL (or without CUDA): it says so.
#include "runtime/transport/nccl_transport.hpp"

namespace loom::transport {

bool nccl_available() { return false; }

expected<std::shared_ptr<void>> make_nccl_transport(int, int, int) {
  return unexpected(errc::unavailable, "the nccl transport is not part of this build (loom was built without CUDA or NCCL)");
}

actors::transport nccl_handle(const std::shared_ptr<void>&) { return {}; }

void nccl_close(const std::shared_ptr<void>&) {}

}  // namespace loom::transport
