// The lock in front of the `ucx` transport's UCP worker, shared by the progress thread and every thread
// that sends (UCX's SERIALIZED mode), one at a time.
//
// The progress thread keeps the lock from one polling round to the next and lets go only when it has
// something to hand on, before it sleeps, or when a sender says it is waiting: an idle round then costs
// one atomic load, not a lock and an unlock (which were a third of an idle round over shared memory).
// A waiting sender spins, then yields; it never sleeps in the kernel, so the progress thread lets go
// without a system call to wake it. After the sender, the progress thread takes the lock back (it
// holds back while a sender is waiting).
#pragma once

#include <atomic>
#include <chrono>
#include <thread>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace loom::transport {

// A hint to the core that this thread spins (a pause), so a sibling hyperthread gets the cycles.
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

class worker_lock {
 public:
  void lock_for_send() {
    waiting_.fetch_add(1, std::memory_order_acq_rel);
    acquire();
    waiting_.fetch_sub(1, std::memory_order_release);
  }
  void lock_for_progress() {
    for (unsigned spins = 0; waiting_.load(std::memory_order_acquire) > 0; ++spins) back_off(spins);
    acquire();
  }
  // Whether a sender is waiting for the lock (the holder should let go).
  bool wanted() const { return waiting_.load(std::memory_order_acquire) > 0; }
  void unlock() { locked_.store(false, std::memory_order_release); }

 private:
  // Spinning, then yielding the core, then short naps: a holder that keeps the lock long (a shutdown
  // flushing its sends) does not keep a waiter busy.
  static void back_off(unsigned spins) {
    if (spins < 64) cpu_relax();
    else if (spins < 64 + 1024) std::this_thread::yield();
    else std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  void acquire() {
    for (unsigned spins = 0;; ++spins) {
      if (!locked_.load(std::memory_order_relaxed) && !locked_.exchange(true, std::memory_order_acquire)) return;
      back_off(spins);
    }
  }
  std::atomic<bool> locked_{false};
  std::atomic<int> waiting_{0};
};

}  // namespace loom::transport
