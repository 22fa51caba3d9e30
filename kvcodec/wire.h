// Little-endian byte writer and bounds-checked reader for the frame format (docs/FORMAT.md).
// Internal to kvcodec.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace kvcodec {

class ByteWriter {
 public:
  explicit ByteWriter(std::vector<uint8_t>* out) : out_(out) {}
  void U8(uint8_t v) { out_->push_back(v); }
  void U32(uint32_t v) { Fixed(v, 4); }
  void U64(uint64_t v) { Fixed(v, 8); }
  void Varint(uint32_t v) {
    while (v >= 0x80) {
      out_->push_back(static_cast<uint8_t>(v | 0x80));
      v >>= 7;
    }
    out_->push_back(static_cast<uint8_t>(v));
  }
  void Bytes(std::span<const uint8_t> b) { Append(b.data(), b.size()); }
  void Bytes(std::string_view s) { Append(s.data(), s.size()); }
  size_t size() const { return out_->size(); }
  // Overwrites a previously written u32 at `offset` (for lengths known only afterwards).
  void PatchU32(size_t offset, uint32_t v) {
    for (int i = 0; i < 4; ++i) (*out_)[offset + i] = static_cast<uint8_t>(v >> (8 * i));
  }

 private:
  void Append(const void* data, size_t n) {
    if (n == 0) return;
    // insert, not resize + memcpy: resize zero-fills the new bytes first (streams are MBs).
    const auto* p = static_cast<const uint8_t*>(data);
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstringop-overflow"  // GCC 12 false positive on insert
#endif
    out_->insert(out_->end(), p, p + n);
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
  }
  void Fixed(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) out_->push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  std::vector<uint8_t>* out_;
};

// Every read checks the remaining length; a failed read leaves a DATA_LOSS status naming `what`.
class ByteReader {
 public:
  explicit ByteReader(std::span<const uint8_t> data) : data_(data) {}
  size_t remaining() const { return data_.size() - pos_; }
  size_t position() const { return pos_; }

  absl::Status U8(uint8_t* v, absl::string_view what) {
    if (remaining() < 1) return Truncated(what);
    *v = data_[pos_++];
    return absl::OkStatus();
  }
  absl::Status U32(uint32_t* v, absl::string_view what) {
    uint64_t w;
    if (auto s = Fixed(&w, 4, what); !s.ok()) return s;
    *v = static_cast<uint32_t>(w);
    return absl::OkStatus();
  }
  absl::Status U64(uint64_t* v, absl::string_view what) { return Fixed(v, 8, what); }
  absl::Status Varint(uint32_t* v, absl::string_view what) {
    uint32_t result = 0;
    for (int i = 0; i < 5; ++i) {
      if (remaining() < 1) return Truncated(what);
      const uint8_t b = data_[pos_++];
      if (i == 4 && b > 0x0f) {
        return absl::DataLossError(absl::StrCat("malformed varint in ", what));
      }
      result |= static_cast<uint32_t>(b & 0x7f) << (7 * i);
      if ((b & 0x80) == 0) {
        *v = result;
        return absl::OkStatus();
      }
    }
    return absl::DataLossError(absl::StrCat("malformed varint in ", what));
  }
  absl::Status Bytes(size_t n, std::span<const uint8_t>* out, absl::string_view what) {
    if (remaining() < n) return Truncated(what);
    *out = data_.subspan(pos_, n);
    pos_ += n;
    return absl::OkStatus();
  }

 private:
  absl::Status Fixed(uint64_t* v, int n, absl::string_view what) {
    if (remaining() < static_cast<size_t>(n)) return Truncated(what);
    uint64_t r = 0;
    for (int i = 0; i < n; ++i) r |= static_cast<uint64_t>(data_[pos_ + i]) << (8 * i);
    pos_ += n;
    *v = r;
    return absl::OkStatus();
  }
  static absl::Status Truncated(absl::string_view what) {
    return absl::DataLossError(absl::StrCat("truncated ", what));
  }
  std::span<const uint8_t> data_;
  size_t pos_ = 0;
};

#define KVC_RETURN_IF_ERROR(expr)            \
  do {                                       \
    if (absl::Status _st = (expr); !_st.ok()) \
      return _st;                            \
  } while (0)

}  // namespace kvcodec
