// Memory for large received payloads. Every payload a rank receives is allocated by the transport and
// freed by its consumer, so how the allocator serves blocks of megabytes decides much of the bandwidth
// (docs/PERFORMANCE.md, "Transport"): a fresh mapping is faulted in 4 KiB at a time, zero-filled, and
// unmapped again when freed, on both sides of a transfer.
#pragma once

#include <cstddef>

namespace loom::transport {

// Receive buffers of at least this size are faulted in as transparent huge pages.
inline constexpr std::size_t huge_receive = std::size_t{8} << 20;

// Asks for huge pages over [data, data + bytes) and faults them in at once (advice only: an older
// kernel or THP "never" leaves the pages to be faulted in by the zero fill). glibc maps every
// allocation above 32 MiB afresh, and a window of large ones outgrows its heaps, so each such receive
// would take a page fault per 4 KiB and its free an unmap as long: at 64 MiB that cost more than the
// transfer; as huge pages faulted in at once, a quarter of it.
void fault_in_huge(void* data, std::size_t bytes);

// Keeps the process's freed blocks of up to 32 MiB for reuse (mallopt), once per process, unless
// GLIBC_TUNABLES already tunes glibc.malloc. With glibc's defaults a block of a megabyte or more is a
// fresh mapping (or heap growth that the next free trims away): at 1 to 16 MiB over shared memory that
// halved the bandwidth. 32 MiB is the largest block glibc lets its heaps serve.
void keep_freed_blocks();

}  // namespace loom::transport
