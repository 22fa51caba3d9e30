// Cancels work that has gone quiet: each watched item is refreshed by Touch() whenever it makes
// progress, and its cancel function runs once it has not for longer than the timeout.
//
// The decode node watches its uploads with it: a sender that stops sending without a deadline
// would otherwise hold its cache reservation, and a gRPC server never ends such a call itself.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <unordered_map>

namespace kvwire::transport {

class IdleWatchdog {
 public:
  // A zero timeout never cancels anything (and starts no thread).
  explicit IdleWatchdog(std::chrono::milliseconds timeout);
  // Stops the watchdog thread; items still watched are not cancelled.
  ~IdleWatchdog();
  IdleWatchdog(const IdleWatchdog&) = delete;
  IdleWatchdog& operator=(const IdleWatchdog&) = delete;

  // Starts watching `key` from now. `cancel` runs at most once, on the watchdog's thread with
  // its lock held, so Forget(key) returning means it is not running and never will.
  void Watch(const void* key, std::function<void()> cancel);
  // `key` made progress: its idle time starts again. No-op for keys not watched.
  void Touch(const void* key);
  // Stops watching `key`. No-op for keys not watched.
  void Forget(const void* key);

  std::chrono::milliseconds timeout() const { return timeout_; }

 private:
  using Clock = std::chrono::steady_clock;
  struct Item {
    Clock::time_point last_progress;
    std::function<void()> cancel;
  };
  void Run();

  const std::chrono::milliseconds timeout_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::unordered_map<const void*, Item> items_;
  std::thread thread_;
};

}  // namespace kvwire::transport
