// The `local` transport: every rank in one process. A payload moves from sender to receiver without
// a copy; a receive posted before its send waits in a table until the send arrives.
#pragma once

#include "actors/transport.hpp"

namespace loom::transport {

// One shared transport for `ranks` ranks; each rank takes its handle with local_handle().
std::shared_ptr<void> make_local_transport(int ranks);
actors::transport local_handle(const std::shared_ptr<void>& state, int rank);

}  // namespace loom::transport
