#include "server/transport/idle_watchdog.h"

#include <algorithm>
#include <utility>

namespace kvwire::transport {

IdleWatchdog::IdleWatchdog(std::chrono::milliseconds timeout) : timeout_(timeout) {
  if (timeout_.count() > 0) thread_ = std::thread([this] { Run(); });
}

IdleWatchdog::~IdleWatchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void IdleWatchdog::Watch(const void* key, std::function<void()> cancel) {
  if (timeout_.count() <= 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  items_[key] = Item{Clock::now(), std::move(cancel)};
}

void IdleWatchdog::Touch(const void* key) {
  if (timeout_.count() <= 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = items_.find(key);
  if (it != items_.end()) it->second.last_progress = Clock::now();
}

void IdleWatchdog::Forget(const void* key) {
  if (timeout_.count() <= 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  items_.erase(key);
}

void IdleWatchdog::Run() {
  // Checking a few times per timeout bounds how late a cancel comes to a quarter of it.
  const auto period = std::clamp<std::chrono::milliseconds>(timeout_ / 4, std::chrono::milliseconds(5),
                                                            std::chrono::milliseconds(1000));
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    wake_.wait_for(lock, period, [this] { return stopping_; });
    const Clock::time_point now = Clock::now();
    for (auto it = items_.begin(); it != items_.end();) {
      if (now - it->second.last_progress > timeout_) {
        it->second.cancel();
        it = items_.erase(it);
      } else {
        ++it;
      }
    }
  }
}

}  // namespace kvwire::transport
