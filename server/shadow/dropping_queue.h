// One worker thread fed by a bounded queue that refuses work when full, rather than growing or
// making the caller wait: what keeps shadow passes from ever holding up a request.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace kvwire::shadow {

class DroppingQueue {
 public:
  // A job is called once: with true to do its work on the worker, or with false when it is
  // discarded unrun at shutdown (so its owner can count it).
  using Job = std::function<void(bool run)>;

  // `capacity` (>= 1; smaller values count as 1) bounds the jobs waiting, the running one not
  // included. With `low_priority` the worker lowers its own scheduling priority to nice 19
  // (Linux: per thread; threads it starts, e.g. OpenMP's, inherit it), so the cores go to
  // requests first; failing to do so is harmless and ignored.
  DroppingQueue(int capacity, bool low_priority);
  // Discards the waiting jobs (job(false)), waits for the running one, joins the worker.
  ~DroppingQueue();
  DroppingQueue(const DroppingQueue&) = delete;
  DroppingQueue& operator=(const DroppingQueue&) = delete;

  // Queues `job` and returns true; returns false when `capacity` jobs are already waiting or
  // the queue is shutting down (the job is then not called at all). Never waits for a job.
  bool TryPush(Job job);
  // Jobs waiting plus the one running.
  int pending() const;
  // Blocks until nothing is waiting or running.
  void WaitIdle();

 private:
  void Loop(bool low_priority);

  const int capacity_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::condition_variable idle_;
  std::deque<Job> waiting_;
  bool running_ = false;
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace kvwire::shadow
