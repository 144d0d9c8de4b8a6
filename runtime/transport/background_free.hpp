// Destroys objects on a thread of its own. The ucx transport hands it the large payloads UCX is done
// sending: freeing a vector of many megabytes unmaps it (glibc maps blocks above 32 MiB on their own,
// and gives back a thread arena's heap once all of it is free), which takes milliseconds that the
// progress thread would otherwise not spend moving messages.
#pragma once

#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace loom::transport {

template <class T>
class background_free {
 public:
  background_free() : thread_([this] { run(); }) {}
  ~background_free() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_one();
    thread_.join();  // what is still queued is destroyed first
  }
  background_free(const background_free&) = delete;
  background_free& operator=(const background_free&) = delete;

  // Takes every item of `items` (left empty) to destroy later.
  void take(std::vector<T>& items) {
    if (items.empty()) return;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (queue_.empty()) queue_.swap(items);
      else
        for (auto& item : items) queue_.push_back(std::move(item));
    }
    items.clear();
    wake_.notify_one();
  }

 private:
  void run() {
    std::vector<T> batch;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, nothing left
      batch.swap(queue_);
      lock.unlock();
      batch.clear();
      lock.lock();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<T> queue_;
  bool stop_ = false;
  std::thread thread_;  // last: starts once the rest is built
};

}  // namespace loom::transport
