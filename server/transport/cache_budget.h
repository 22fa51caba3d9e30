// A node-wide budget for the bytes of KV caches held at once. The decode node's uploads and its
// PromptNode's prefills (the scout and text paths) share one, so concurrent requests of either
// kind fail with RESOURCE_EXHAUSTED beyond the limit instead of pushing the node into an
// out-of-memory kill.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>

#include "absl/status/status.h"

namespace kvwire::transport {

class CacheBudget {
 public:
  // 0: no limit (reservations are still counted).
  explicit CacheBudget(uint64_t limit_bytes) : limit_(limit_bytes) {}

  // Reserves `bytes`; ResourceExhausted (nothing reserved) when the limit would be exceeded.
  absl::Status Reserve(uint64_t bytes);
  void Release(uint64_t bytes);
  uint64_t reserved() const;
  uint64_t limit() const { return limit_; }

 private:
  const uint64_t limit_;
  mutable std::mutex mu_;
  uint64_t reserved_ = 0;
};

// Releases what it reserved when destroyed.
class CacheReservation {
 public:
  CacheReservation() = default;
  // Reserves `bytes` of `budget` (may be null: no budget, always OK).
  static absl::Status Make(CacheBudget* budget, uint64_t bytes, CacheReservation* out);
  CacheReservation(CacheReservation&& other) noexcept { *this = std::move(other); }
  CacheReservation& operator=(CacheReservation&& other) noexcept;
  ~CacheReservation() { Reset(); }
  void Reset();

 private:
  CacheBudget* budget_ = nullptr;
  uint64_t bytes_ = 0;
};

}  // namespace kvwire::transport
