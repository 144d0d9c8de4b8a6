// Page-locked host memory that is kept and reused: host <-> device copies through it run at full PCIe
// rate and asynchronously, and no call pays page faults for a fresh buffer. It grows on demand (the
// old contents are dropped) and never shrinks. Not thread-safe: one owner at a time.
#pragma once

#include <cstddef>
#include <memory>

#include "kernels/cuda/types.hpp"

namespace loom::cuda::model {

class page_locked_buffer {
 public:
  // At least `bytes` of page-locked memory; reallocated only when `bytes` is more than the last size.
  // `what` names the use in the error (for example "staging memory").
  expected<void*> reserve(std::size_t bytes, const char* what);

 private:
  struct host_free {
    void operator()(void* p) const;
  };
  std::unique_ptr<void, host_free> data_;
  std::size_t bytes_ = 0;
};

}  // namespace loom::cuda::model
