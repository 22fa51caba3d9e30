#include "server/scout/index_coding.h"

#include <zstd.h>

#include "absl/strings/str_cat.h"

namespace kvwire::scout {
namespace {

enum PositionTag : uint8_t { kBitmap = 1, kGaps = 2 };

void PutVarint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

// Reads one varint of at most 5 bytes (a value below 2^35); false when truncated or longer.
bool GetVarint(std::string_view* in, uint64_t* v) {
  *v = 0;
  for (int i = 0; i < 5; ++i) {
    if (in->empty()) return false;
    const uint8_t b = static_cast<uint8_t>(in->front());
    in->remove_prefix(1);
    *v |= static_cast<uint64_t>(b & 0x7F) << (7 * i);
    if ((b & 0x80) == 0) return true;
  }
  return false;
}

}  // namespace

absl::StatusOr<std::string> EncodeTokenIds(std::span<const int32_t> ids) {
  std::string varints;
  varints.reserve(ids.size() * 2);
  for (int32_t id : ids) {
    if (id < 0) return absl::InvalidArgumentError(absl::StrCat("negative token id ", id));
    PutVarint(static_cast<uint64_t>(id), &varints);
  }
  std::string out(ZSTD_compressBound(varints.size()), '\0');
  const size_t n = ZSTD_compress(out.data(), out.size(), varints.data(), varints.size(), 19);
  if (ZSTD_isError(n)) return absl::InternalError(ZSTD_getErrorName(n));
  out.resize(n);
  return out;
}

absl::StatusOr<std::vector<int32_t>> DecodeTokenIds(std::string_view bytes, int64_t max_tokens) {
  const unsigned long long content = ZSTD_getFrameContentSize(bytes.data(), bytes.size());
  if (content == ZSTD_CONTENTSIZE_ERROR || content == ZSTD_CONTENTSIZE_UNKNOWN) {
    return absl::InvalidArgumentError("token ids: not a zstd frame with a known size");
  }
  // An id takes 1 to 5 varint bytes, so a larger frame cannot hold max_tokens ids or fewer.
  if (content > static_cast<unsigned long long>(max_tokens) * 5) {
    return absl::InvalidArgumentError(
        absl::StrCat("token ids: ", content, " bytes is more than ", max_tokens, " tokens"));
  }
  std::string varints(content, '\0');
  const size_t n = ZSTD_decompress(varints.data(), varints.size(), bytes.data(), bytes.size());
  if (ZSTD_isError(n) || n != content) {
    return absl::InvalidArgumentError(absl::StrCat("token ids: corrupt zstd frame"));
  }
  std::vector<int32_t> ids;
  std::string_view in(varints);
  while (!in.empty()) {
    uint64_t v;
    if (!GetVarint(&in, &v) || v > 0x7FFFFFFF) {
      return absl::InvalidArgumentError("token ids: truncated or out-of-range varint");
    }
    if (static_cast<int64_t>(ids.size()) >= max_tokens) {
      return absl::InvalidArgumentError(absl::StrCat("token ids: more than ", max_tokens));
    }
    ids.push_back(static_cast<int32_t>(v));
  }
  return ids;
}

absl::StatusOr<std::string> EncodePositions(std::span<const int32_t> positions, int num_tokens) {
  std::string gaps(1, static_cast<char>(kGaps));
  int64_t previous = -1;
  for (int32_t p : positions) {
    if (p <= previous || p >= num_tokens) {
      return absl::InvalidArgumentError(absl::StrCat(
          "positions must be sorted, unique and below ", num_tokens, "; got ", p));
    }
    PutVarint(static_cast<uint64_t>(p - previous - 1), &gaps);
    previous = p;
  }
  std::string bitmap(1 + (static_cast<size_t>(num_tokens) + 7) / 8, '\0');
  bitmap[0] = static_cast<char>(kBitmap);
  for (int32_t p : positions) bitmap[1 + p / 8] |= static_cast<char>(1u << (p % 8));
  return bitmap.size() < gaps.size() ? bitmap : gaps;
}

absl::StatusOr<std::vector<int32_t>> DecodePositions(std::string_view bytes, int num_tokens) {
  if (bytes.empty()) return absl::InvalidArgumentError("positions: empty");
  if (num_tokens < 0) return absl::InvalidArgumentError("positions: negative token count");
  const uint8_t tag = static_cast<uint8_t>(bytes[0]);
  bytes.remove_prefix(1);
  std::vector<int32_t> out;
  if (tag == kBitmap) {
    if (bytes.size() != (static_cast<size_t>(num_tokens) + 7) / 8) {
      return absl::InvalidArgumentError(absl::StrCat("positions: bitmap of ", bytes.size(),
                                                     " bytes for ", num_tokens, " tokens"));
    }
    for (int p = 0; p < static_cast<int>(bytes.size()) * 8; ++p) {
      if ((static_cast<uint8_t>(bytes[p / 8]) >> (p % 8)) & 1) {
        if (p >= num_tokens) return absl::InvalidArgumentError("positions: bit past the end");
        out.push_back(p);
      }
    }
    return out;
  }
  if (tag != kGaps) return absl::InvalidArgumentError(absl::StrCat("positions: unknown tag ", tag));
  int64_t previous = -1;
  while (!bytes.empty()) {
    uint64_t gap;
    if (!GetVarint(&bytes, &gap)) return absl::InvalidArgumentError("positions: truncated varint");
    const int64_t p = previous + 1 + static_cast<int64_t>(gap);
    if (p >= num_tokens) {
      return absl::InvalidArgumentError(
          absl::StrCat("positions: ", p, " is outside [0, ", num_tokens, ")"));
    }
    out.push_back(static_cast<int32_t>(p));
    previous = p;
  }
  return out;
}

}  // namespace kvwire::scout
