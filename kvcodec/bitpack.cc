// Bit packing of quantization codes: LSB first, no padding between codes (see quant.h).
#include <cstring>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kvcodec/quant.h"

namespace kvcodec {

std::vector<uint8_t> PackBits(std::span<const uint8_t> codes, int bits) {
  // bits outside 1..8 is a programming error; an empty result makes UnpackBits fail loudly.
  if (bits < 1 || bits > 8) return {};
  const size_t n = codes.size();
  std::vector<uint8_t> out((n * bits + 7) / 8);
  const uint8_t* c = codes.data();
  uint8_t* o = out.data();
  switch (bits) {
    case 8:
      if (n) std::memcpy(o, c, n);
      return out;
    case 4: {
      const size_t pairs = n / 2;
      for (size_t i = 0; i < pairs; ++i) {
        o[i] = static_cast<uint8_t>((c[2 * i] & 0xfu) | (c[2 * i + 1] & 0xfu) << 4);
      }
      if (n & 1) o[pairs] = c[n - 1] & 0xfu;
      return out;
    }
    case 2: {
      const size_t quads = n / 4;
      for (size_t i = 0; i < quads; ++i) {
        o[i] = static_cast<uint8_t>((c[4 * i] & 3u) | (c[4 * i + 1] & 3u) << 2 |
                                    (c[4 * i + 2] & 3u) << 4 | (c[4 * i + 3] & 3u) << 6);
      }
      uint8_t last = 0;
      for (size_t i = quads * 4; i < n; ++i) last |= (c[i] & 3u) << (2 * (i - quads * 4));
      if (n % 4) o[quads] = last;
      return out;
    }
    default: {
      // Generic: accumulate into a 64-bit register, flush whole bytes.
      const uint32_t mask = (1u << bits) - 1;
      uint64_t acc = 0;
      int filled = 0;
      size_t j = 0;
      for (size_t i = 0; i < n; ++i) {
        acc |= static_cast<uint64_t>(c[i] & mask) << filled;
        filled += bits;
        while (filled >= 8) {
          o[j++] = static_cast<uint8_t>(acc);
          acc >>= 8;
          filled -= 8;
        }
      }
      if (filled > 0) o[j] = static_cast<uint8_t>(acc);
      return out;
    }
  }
}

absl::Status UnpackBits(std::span<const uint8_t> packed, int bits, size_t n,
                        std::span<uint8_t> out) {
  if (bits < 1 || bits > 8) {
    return absl::InvalidArgumentError(absl::StrCat("code width must be 1..8 bits, got ", bits));
  }
  // n * bits cannot overflow for any n that fits in memory as codes (n <= 2^61 for 64-bit size_t
  // would be needed); guard anyway so a hostile count cannot wrap the check.
  if (n > std::numeric_limits<size_t>::max() / 8) {
    return absl::InvalidArgumentError("code count too large");
  }
  const size_t want = (n * static_cast<size_t>(bits) + 7) / 8;
  if (packed.size() != want) {
    return absl::InvalidArgumentError(absl::StrCat("packed codes: ", packed.size(),
                                                   " bytes, expected ", want, " for ", n,
                                                   " codes of ", bits, " bits"));
  }
  if (out.size() < n) {
    return absl::InvalidArgumentError(
        absl::StrCat("unpack output holds ", out.size(), " codes, need ", n));
  }
  const uint8_t* p = packed.data();
  uint8_t* o = out.data();
  switch (bits) {
    case 8:
      if (n) std::memcpy(o, p, n);
      return absl::OkStatus();
    case 4: {
      const size_t pairs = n / 2;
      for (size_t i = 0; i < pairs; ++i) {
        o[2 * i] = p[i] & 0xfu;
        o[2 * i + 1] = p[i] >> 4;
      }
      if (n & 1) o[n - 1] = p[pairs] & 0xfu;
      return absl::OkStatus();
    }
    case 2: {
      const size_t quads = n / 4;
      for (size_t i = 0; i < quads; ++i) {
        o[4 * i] = p[i] & 3u;
        o[4 * i + 1] = (p[i] >> 2) & 3u;
        o[4 * i + 2] = (p[i] >> 4) & 3u;
        o[4 * i + 3] = p[i] >> 6;
      }
      for (size_t i = quads * 4; i < n; ++i) o[i] = (p[quads] >> (2 * (i - quads * 4))) & 3u;
      return absl::OkStatus();
    }
    default: {
      const uint32_t mask = (1u << bits) - 1;
      uint64_t acc = 0;
      int filled = 0;
      size_t j = 0;
      for (size_t i = 0; i < n; ++i) {
        if (filled < bits) {  // bits <= 8, so one byte always suffices
          acc |= static_cast<uint64_t>(p[j++]) << filled;
          filled += 8;
        }
        o[i] = static_cast<uint8_t>(acc & mask);
        acc >>= bits;
        filled -= bits;
      }
      return absl::OkStatus();
    }
  }
}

}  // namespace kvcodec
