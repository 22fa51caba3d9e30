#include "server/transport/cache_budget.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace kvwire::transport {

absl::Status CacheBudget::Reserve(uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  if (limit_ > 0 && (bytes > limit_ || reserved_ > limit_ - bytes)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "cache memory limit: this request needs ", bytes, " bytes, ", reserved_, " of ", limit_,
        " are held by other requests; retry later or on another node"));
  }
  reserved_ += bytes;
  return absl::OkStatus();
}

void CacheBudget::Release(uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  reserved_ -= std::min(bytes, reserved_);
}

uint64_t CacheBudget::reserved() const {
  std::lock_guard<std::mutex> lock(mu_);
  return reserved_;
}

absl::Status CacheReservation::Make(CacheBudget* budget, uint64_t bytes, CacheReservation* out) {
  out->Reset();
  if (budget == nullptr) return absl::OkStatus();
  if (absl::Status s = budget->Reserve(bytes); !s.ok()) return s;
  out->budget_ = budget;
  out->bytes_ = bytes;
  return absl::OkStatus();
}

CacheReservation& CacheReservation::operator=(CacheReservation&& other) noexcept {
  if (this != &other) {
    Reset();
    budget_ = std::exchange(other.budget_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

void CacheReservation::Reset() {
  if (budget_ != nullptr) budget_->Release(bytes_);
  budget_ = nullptr;
  bytes_ = 0;
}

}  // namespace kvwire::transport
