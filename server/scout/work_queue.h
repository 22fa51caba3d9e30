// A fixed set of worker threads for unary callback RPCs: the reactor returns at once, the
// engine work runs on a worker, and at most `workers` requests use the engine at a time.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace kvwire::scout {

class WorkQueue {
 public:
  // At most `max_queued` jobs wait for a worker (0: no limit): each holds its request, and a
  // client that deep in the queue would mostly time out waiting, so more are refused at once.
  explicit WorkQueue(int workers, int max_queued = 0) : max_queued_(std::max(0, max_queued)) {
    for (int i = 0; i < std::max(1, workers); ++i) threads_.emplace_back([this] { Loop(); });
  }
  // Runs what is queued, then joins.
  ~WorkQueue() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : threads_) t.join();
  }
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  // OK once `job` is queued. Otherwise `job` is not run: RESOURCE_EXHAUSTED when max_queued
  // jobs already wait, UNAVAILABLE once the queue is stopping.
  absl::Status Post(std::function<void()> job) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return absl::UnavailableError("shutting down");
      if (max_queued_ > 0 && jobs_.size() >= static_cast<size_t>(max_queued_)) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "busy: ", max_queued_, " requests are already waiting for a worker; retry later"));
      }
      jobs_.push_back(std::move(job));
    }
    cv_.notify_one();
    return absl::OkStatus();
  }

 private:
  void Loop() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
        if (jobs_.empty()) return;
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      job();
    }
  }

  const int max_queued_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace kvwire::scout
