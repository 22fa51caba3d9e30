#include "kernels/backend.h"

#include "absl/strings/str_cat.h"

namespace kvwire::gpu {

absl::StatusOr<Buffer> Buffer::Make(Backend& backend, size_t bytes) {
  auto p = backend.Allocate(bytes);
  if (!p.ok()) return p.status();
  Buffer b;
  b.backend_ = &backend;
  b.data_ = *p;
  b.size_ = bytes;
  return b;
}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    Reset();
    backend_ = o.backend_;
    data_ = o.data_;
    size_ = o.size_;
    o.backend_ = nullptr;
    o.data_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}

void Buffer::Reset() {
  if (backend_ != nullptr && data_ != nullptr) backend_->Free(data_);
  backend_ = nullptr;
  data_ = nullptr;
  size_ = 0;
}

absl::Status Workspace::Reserve(size_t bytes) {
  if (used_ != 0) return absl::InternalError("Workspace::Reserve while pieces are in use");
  if (buffer_.size() >= bytes) return absl::OkStatus();
  buffer_.Reset();
  auto b = Buffer::Make(backend_, bytes);
  if (!b.ok()) return b.status();
  buffer_ = *std::move(b);
  return absl::OkStatus();
}

absl::StatusOr<void*> Workspace::Take(size_t bytes) {
  const size_t n = Aligned(bytes);
  if (used_ + n > buffer_.size()) {
    return absl::InternalError(absl::StrCat("workspace of ", buffer_.size(), " bytes cannot give ",
                                            n, " more after ", used_));
  }
  void* p = static_cast<uint8_t*>(buffer_.data()) + used_;
  used_ += n;
  return p;
}

}  // namespace kvwire::gpu
