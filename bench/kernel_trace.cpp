// A kernel-level tracer for any CUDA program, loaded by the driver: with
//   CUDA_INJECTION64_PATH=build/lib/libloom_kernel_trace.so LOOM_KERNEL_TRACE=kernels.csv PROGRAM ...
// the driver calls InitializeInjection() at CUDA's start, and at exit every kernel, copy and memset the
// program ran is written to LOOM_KERNEL_TRACE (a "%p" in it becomes the process id) as one CSV line: what, stream, start, end, the time the
// launch was queued by the host and submitted to the GPU (ns, CUPTI's clock), grid and block sizes,
// and the kernel's (mangled) name. `start - submitted` is how long a launch that was ready waited for
// room on the SMs; bench/kernel_trace.py sums it per stream.
#include <cupti.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

namespace {

constexpr std::size_t buffer_bytes = 8u << 20;

std::mutex lines_mutex;
std::vector<std::string> lines;

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *size = buffer_bytes;
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, buffer_bytes));
  *max_records = 0;
}

std::string line_of(const CUpti_Activity* record) {
  char text[512];
  switch (record->kind) {
    case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL:
    case CUPTI_ACTIVITY_KIND_KERNEL: {
      const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
      std::snprintf(text, sizeof text, "kernel,%u,%llu,%llu,%llu,%llu,%d,%d,%s", k->streamId,
                    static_cast<unsigned long long>(k->start), static_cast<unsigned long long>(k->end),
                    static_cast<unsigned long long>(k->queued), static_cast<unsigned long long>(k->submitted),
                    k->gridX * k->gridY * k->gridZ, k->blockX * k->blockY * k->blockZ, k->name ? k->name : "?");
      return text;
    }
    case CUPTI_ACTIVITY_KIND_MEMCPY: {
      const auto* m = reinterpret_cast<const CUpti_ActivityMemcpy6*>(record);
      std::snprintf(text, sizeof text, "memcpy%d,%u,%llu,%llu,0,0,%llu,0,copy", m->copyKind, m->streamId,
                    static_cast<unsigned long long>(m->start), static_cast<unsigned long long>(m->end),
                    static_cast<unsigned long long>(m->bytes));
      return text;
    }
    case CUPTI_ACTIVITY_KIND_MEMSET: {
      const auto* m = reinterpret_cast<const CUpti_ActivityMemset4*>(record);
      std::snprintf(text, sizeof text, "memset,%u,%llu,%llu,0,0,%llu,0,memset", m->streamId,
                    static_cast<unsigned long long>(m->start), static_cast<unsigned long long>(m->end),
                    static_cast<unsigned long long>(m->bytes));
      return text;
    }
    default:
      return {};
  }
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  CUpti_Activity* record = nullptr;
  std::vector<std::string> batch;
  while (cuptiActivityGetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS)
    if (auto l = line_of(record); !l.empty()) batch.push_back(std::move(l));
  std::free(buffer);
  std::lock_guard<std::mutex> lock(lines_mutex);
  for (auto& l : batch) lines.push_back(std::move(l));
}

std::string trace_path() {
  const char* set = std::getenv("LOOM_KERNEL_TRACE");
  std::string path = set ? set : "kernels.%p.csv";
  if (auto at = path.find("%p"); at != std::string::npos) path.replace(at, 2, std::to_string(getpid()));
  return path;
}

void write_trace() {
  cuptiActivityFlushAll(1);
  const std::string path = trace_path();
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) {
    std::fprintf(stderr, "kernel_trace: cannot write %s\n", path.c_str());
    return;
  }
  std::fprintf(f, "what,stream,start,end,queued,submitted,grid,block,name\n");
  std::lock_guard<std::mutex> lock(lines_mutex);
  for (const auto& l : lines) std::fprintf(f, "%s\n", l.c_str());
  std::fclose(f);
  std::fprintf(stderr, "kernel_trace: %zu records in %s\n", lines.size(), path.c_str());
}

bool enabled(CUptiResult r, const char* what) {
  if (r == CUPTI_SUCCESS) return true;
  const char* text = nullptr;
  cuptiGetResultString(r, &text);
  std::fprintf(stderr, "kernel_trace: %s failed: %s\n", what, text ? text : "?");
  return false;
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int InitializeInjection() {
  if (!enabled(cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed), "cuptiActivityRegisterCallbacks"))
    return 0;
  enabled(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL), "enabling kernel records");
  enabled(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMCPY), "enabling copy records");
  enabled(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMSET), "enabling memset records");
  enabled(cuptiActivityEnableLatencyTimestamps(1), "enabling queued/submitted timestamps");
  std::atexit(write_trace);
  return 1;
}
