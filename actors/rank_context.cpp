#include "actors/rank_context.hpp"

#include "actors/cuda_backend.hpp"

namespace loom::actors {

std::int64_t rank_context::now_ns() const {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - step_start).count();
}

chunk_run& rank_context::run(int chunk, int microbatch) {
  std::lock_guard<std::mutex> lock(store_mutex_);
  auto& slot = store_[{chunk, microbatch}];
  if (!slot) {
    slot = std::make_unique<chunk_run>();
    slot->layers.resize(layers_per_chunk);
  }
  return *slot;
}

void rank_context::release(int chunk, int microbatch) {
  std::unique_ptr<chunk_run> gone;
  std::lock_guard<std::mutex> lock(store_mutex_);
  auto it = store_.find({chunk, microbatch});
  if (it == store_.end()) return;
  gone = std::move(it->second);
  store_.erase(it);
  if (gone->gpu) gpu_release(*this, *gone);
}

std::int64_t rank_context::held_bytes() {
  std::lock_guard<std::mutex> lock(store_mutex_);
  std::int64_t b = 0;
  for (const auto& [key, run] : store_) {
    for (const auto& l : run->layers) b += static_cast<std::int64_t>(l.bytes());
    b += static_cast<std::int64_t>((run->head.y.capacity() + run->head.hn.capacity() + run->head.dlogits.capacity() +
                                    run->head.dhn.capacity() + run->input_grad.capacity()) * sizeof(float));
    b += gpu_bytes(*run);
  }
  return b;
}

void rank_context::note_bytes() {
  std::int64_t now = held_bytes();
  std::lock_guard<std::mutex> lock(stats_mutex);
  if (now > peak_bytes) peak_bytes = now;
}

double rank_context::timed_work(std::int64_t start, std::int64_t now, double& rate_now) {
  std::lock_guard<std::mutex> lock(comm_mutex);
  double lost = 0;
  rate_now = 1;
  for (const auto& c : comm_log) {
    const std::int64_t end = c.end_ns < 0 ? now : c.end_ns;
    const std::int64_t overlap = std::min(end, now) - std::max(c.start_ns, start);
    const double share = static_cast<double>(c.sms) / sms_total;
    if (overlap > 0) lost += static_cast<double>(overlap) * share;
    if (c.end_ns < 0) rate_now = std::max(0.0, rate_now - share);
  }
  return static_cast<double>(now - start) - lost;
}

void rank_context::begin_step(int step_index) {
  {
    std::lock_guard<std::mutex> lock(comm_mutex);
    comm_log.clear();
  }
  timer_debt_ns[0] = timer_debt_ns[1] = 0;
  step = step_index;
  step_start = std::chrono::steady_clock::now();
  peak_bytes = 0;
  loss_sum = 0;
  expert_rows = 0;
  load.assign(chunks.size() * static_cast<std::size_t>(layers_per_chunk) * shape.experts, 0.0);
  for (auto& c : chunks) c.params->zero_grads();
}

}  // namespace loom::actors
