#include "server/tokenizer/utf8.h"

namespace kvwire::tokenizer::utf8 {
namespace {

// Valid second-byte range for each lead byte (RFC 3629, table 3-7 of the Unicode standard):
// this is what rules out overlong forms, surrogates and values above U+10FFFF.
struct LeadInfo {
  uint8_t len;  // 0 = invalid lead byte
  uint8_t lo;
  uint8_t hi;
};

LeadInfo Lead(uint8_t b) {
  if (b < 0x80) return {1, 0, 0};
  if (b < 0xC2) return {0, 0, 0};
  if (b < 0xE0) return {2, 0x80, 0xBF};
  if (b == 0xE0) return {3, 0xA0, 0xBF};
  if (b == 0xED) return {3, 0x80, 0x9F};
  if (b < 0xF0) return {3, 0x80, 0xBF};
  if (b == 0xF0) return {4, 0x90, 0xBF};
  if (b < 0xF4) return {4, 0x80, 0xBF};
  if (b == 0xF4) return {4, 0x80, 0x8F};
  return {0, 0, 0};
}

// Number of bytes from s[i] that are a (possibly complete) valid prefix of a sequence.
size_t ValidPrefix(std::string_view s, size_t i, LeadInfo li) {
  size_t n = 1;
  for (; n < li.len && i + n < s.size(); ++n) {
    const uint8_t c = static_cast<uint8_t>(s[i + n]);
    const uint8_t lo = n == 1 ? li.lo : 0x80;
    const uint8_t hi = n == 1 ? li.hi : 0xBF;
    if (c < lo || c > hi) break;
  }
  return n;
}

}  // namespace

size_t ValidSequenceLength(std::string_view s, size_t i) {
  const LeadInfo li = Lead(static_cast<uint8_t>(s[i]));
  if (li.len == 0) return 0;
  if (li.len == 1) return 1;
  return ValidPrefix(s, i, li) == li.len ? li.len : 0;
}

size_t FindInvalid(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    // ASCII fast path, 8 bytes at a time.
    while (i + 8 <= n) {
      uint64_t w = 0;
      for (int k = 0; k < 8; ++k) w |= static_cast<uint64_t>(static_cast<uint8_t>(s[i + k])) << (8 * k);
      if (w & 0x8080808080808080ULL) break;
      i += 8;
    }
    if (i >= n) break;
    const size_t len = ValidSequenceLength(s, i);
    if (len == 0) return i;
    i += len;
  }
  return std::string_view::npos;
}

char32_t DecodeAt(std::string_view s, size_t i, size_t* len) {
  const uint8_t b0 = static_cast<uint8_t>(s[i]);
  if (b0 < 0x80) {
    *len = 1;
    return b0;
  }
  auto cont = [&](size_t k) { return static_cast<char32_t>(static_cast<uint8_t>(s[i + k]) & 0x3F); };
  if (b0 < 0xE0) {
    *len = 2;
    return (static_cast<char32_t>(b0 & 0x1F) << 6) | cont(1);
  }
  if (b0 < 0xF0) {
    *len = 3;
    return (static_cast<char32_t>(b0 & 0x0F) << 12) | (cont(1) << 6) | cont(2);
  }
  *len = 4;
  return (static_cast<char32_t>(b0 & 0x07) << 18) | (cont(1) << 12) | (cont(2) << 6) | cont(3);
}

void Append(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

void AppendLossy(std::string_view s, std::string* out) {
  size_t i = 0;
  while (i < s.size()) {
    const LeadInfo li = Lead(static_cast<uint8_t>(s[i]));
    if (li.len == 1) {
      out->push_back(s[i++]);
      continue;
    }
    if (li.len == 0) {
      out->append(kReplacement);
      ++i;
      continue;
    }
    const size_t n = ValidPrefix(s, i, li);
    if (n == li.len) {
      out->append(s.substr(i, n));
    } else {
      // A truncated or broken sequence: its valid prefix is one "maximal subpart" and becomes
      // a single U+FFFD (the W3C/Unicode recommended practice that Python and Rust follow).
      out->append(kReplacement);
    }
    i += n;
  }
}

size_t IncompleteTailLength(std::string_view s) {
  // A sequence is at most 4 bytes, so only a lead byte among the last 3 can start an
  // incomplete one.
  const size_t n = s.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const size_t i = n - back;
    const uint8_t b = static_cast<uint8_t>(s[i]);
    if ((b & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
    const LeadInfo li = Lead(b);
    if (li.len <= back) return 0;  // ASCII, invalid, or already complete
    return ValidPrefix(s, i, li) == back ? back : 0;
  }
  return 0;
}

}  // namespace kvwire::tokenizer::utf8
