#include "server/shadow/dropping_queue.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

namespace kvwire::shadow {

DroppingQueue::DroppingQueue(int capacity, bool low_priority)
    : capacity_(std::max(1, capacity)), worker_([this, low_priority] { Loop(low_priority); }) {}

DroppingQueue::~DroppingQueue() {
  std::deque<Job> discarded;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    discarded.swap(waiting_);
  }
  wake_.notify_all();
  idle_.notify_all();
  for (Job& job : discarded) job(false);
  worker_.join();
}

bool DroppingQueue::TryPush(Job job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ || static_cast<int>(waiting_.size()) >= capacity_) return false;
    waiting_.push_back(std::move(job));
  }
  wake_.notify_one();
  return true;
}

int DroppingQueue::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(waiting_.size()) + (running_ ? 1 : 0);
}

void DroppingQueue::WaitIdle() {
  std::unique_lock<std::mutex> lock(mu_);
  idle_.wait(lock, [this] { return waiting_.empty() && !running_; });
}

void DroppingQueue::Loop(bool low_priority) {
  if (low_priority) {
    // setpriority on a thread id changes that thread only (Linux), not the whole process.
    (void)setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), 19);
  }
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [this] { return stopping_ || !waiting_.empty(); });
      if (waiting_.empty()) return;  // stopping
      job = std::move(waiting_.front());
      waiting_.pop_front();
      running_ = true;
    }
    job(true);
    job = nullptr;  // release what the job holds before reporting idle
    {
      std::lock_guard<std::mutex> lock(mu_);
      running_ = false;
    }
    idle_.notify_all();
  }
}

}  // namespace kvwire::shadow
