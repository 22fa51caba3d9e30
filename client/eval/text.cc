#include "client/eval/text.h"

#include <algorithm>
#include <cstdint>

namespace kvwire::eval::text {
namespace {

struct Range {
  char32_t lo, hi;  // inclusive
};

template <size_t N>
bool InRanges(const Range (&table)[N], char32_t c) {
  // Tables are sorted and disjoint, so a binary search on the upper bound finds the candidate.
  const Range* it = std::lower_bound(std::begin(table), std::end(table), c,
                                     [](const Range& r, char32_t v) { return r.hi < v; });
  return it != std::end(table) && it->lo <= c;
}

// Non-ASCII code points that Python's `\w` rejects (see IsWordChar in text.h). Sorted, disjoint.
constexpr Range kNonWord[] = {
    {0x0080, 0x00A9}, {0x00AB, 0x00B1}, {0x00B4, 0x00B4}, {0x00B6, 0x00B8}, {0x00BB, 0x00BB},
    {0x00BF, 0x00BF}, {0x00D7, 0x00D7}, {0x00F7, 0x00F7}, {0x02C2, 0x02C5}, {0x02D2, 0x02DF},
    {0x02E5, 0x02EB}, {0x02ED, 0x02ED}, {0x02EF, 0x036F}, {0x037E, 0x037E}, {0x0384, 0x0385},
    {0x0387, 0x0387}, {0x0483, 0x0489}, {0x055A, 0x055F}, {0x0589, 0x058A}, {0x0591, 0x05C7},
    {0x05F3, 0x05F4}, {0x0600, 0x061F}, {0x064B, 0x065F}, {0x066A, 0x066D}, {0x0670, 0x0670},
    {0x06D4, 0x06D4}, {0x06D6, 0x06E4}, {0x06E7, 0x06ED}, {0x0964, 0x0965}, {0x0E3F, 0x0E3F},
    {0x0E4F, 0x0E4F}, {0x0E5A, 0x0E5B}, {0x1680, 0x1680}, {0x2000, 0x206F}, {0x207A, 0x207E},
    {0x208A, 0x208E}, {0x20A0, 0x20FF}, {0x2190, 0x245F}, {0x249C, 0x24E9}, {0x2500, 0x2775},
    {0x2794, 0x2BFF}, {0x2E00, 0x2E7F}, {0x3000, 0x3004}, {0x3008, 0x3020}, {0x302A, 0x3030},
    {0x3036, 0x3037}, {0x303D, 0x303F}, {0x3099, 0x309C}, {0x30A0, 0x30A0}, {0x30FB, 0x30FB},
    {0xD800, 0xF8FF}, {0xFE00, 0xFE19}, {0xFE30, 0xFE6F}, {0xFEFF, 0xFEFF}, {0xFF00, 0xFF0F},
    {0xFF1A, 0xFF20}, {0xFF3B, 0xFF40}, {0xFF5B, 0xFF65}, {0xFFE0, 0xFFFF}, {0x1F000, 0x1FAFF},
    {0xE0000, 0x10FFFF},
};

// First code point of each ten-digit Nd block in the BMP.
constexpr char32_t kDigitZeros[] = {
    0x0030, 0x0660, 0x06F0, 0x07C0, 0x0966, 0x09E6, 0x0A66, 0x0AE6, 0x0B66, 0x0BE6, 0x0C66,
    0x0CE6, 0x0D66, 0x0DE6, 0x0E50, 0x0ED0, 0x0F20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946,
    0x19D0, 0x1A80, 0x1A90, 0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0,
    0xA9F0, 0xAA50, 0xABF0, 0xFF10,
};

// Simple one-to-one lowercase mapping (the U+0130 special case is handled by the caller).
char32_t LowerOne(char32_t c) {
  if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
  auto even_up = [c](char32_t lo, char32_t hi) { return c >= lo && c <= hi && (c - lo) % 2 == 0; };
  if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 32;
  if (c < 0x100) return c;
  // Latin Extended-A: pairs (upper, lower) starting on even code points, except 0x139..0x148 and
  // 0x179..0x17E, whose pairs start on odd code points.
  if (even_up(0x100, 0x12F) || even_up(0x132, 0x137) || even_up(0x14A, 0x177)) return c + 1;
  if (c >= 0x139 && c <= 0x148 && (c % 2 == 1)) return c + 1;
  if (c >= 0x179 && c <= 0x17E && (c % 2 == 1)) return c + 1;
  if (c == 0x178) return 0xFF;
  // Latin Extended-B: the regular runs and the digraph triples.
  if (c == 0x1C4 || c == 0x1C5) return 0x1C6;
  if (c == 0x1C7 || c == 0x1C8) return 0x1C9;
  if (c == 0x1CA || c == 0x1CB) return 0x1CC;
  if (c == 0x1F1 || c == 0x1F2) return 0x1F3;
  if (c == 0x1F4) return 0x1F5;
  if (c >= 0x1CD && c <= 0x1DC && (c % 2 == 1)) return c + 1;
  if (even_up(0x1DE, 0x1EF) || even_up(0x1F8, 0x21F) || even_up(0x222, 0x233)) return c + 1;
  // Greek.
  if (c == 0x386) return 0x3AC;
  if (c >= 0x388 && c <= 0x38A) return c + 37;
  if (c == 0x38C) return 0x3CC;
  if (c == 0x38E || c == 0x38F) return c + 63;
  if ((c >= 0x391 && c <= 0x3A1) || (c >= 0x3A3 && c <= 0x3AB)) return c + 32;
  if (even_up(0x3D8, 0x3EF)) return c + 1;
  // Cyrillic.
  if (c >= 0x400 && c <= 0x40F) return c + 80;
  if (c >= 0x410 && c <= 0x42F) return c + 32;
  if (even_up(0x460, 0x481) || even_up(0x48A, 0x4BF) || even_up(0x4D0, 0x52F)) return c + 1;
  if (c == 0x4C0) return 0x4CF;
  if (c >= 0x4C1 && c <= 0x4CE && (c % 2 == 1)) return c + 1;
  // Armenian, Georgian.
  if (c >= 0x531 && c <= 0x556) return c + 48;
  if (c >= 0x10A0 && c <= 0x10C5) return c + 0x1C60;
  // Latin Extended Additional.
  if (even_up(0x1E00, 0x1E95) || even_up(0x1EA0, 0x1EFF)) return c + 1;
  if (c == 0x1E9E) return 0xDF;
  // Roman numerals, circled letters, Glagolitic, fullwidth Latin.
  if (c >= 0x2160 && c <= 0x216F) return c + 16;
  if (c >= 0x24B6 && c <= 0x24CF) return c + 26;
  if (c >= 0x2C00 && c <= 0x2C2F) return c + 48;
  if (c >= 0xFF21 && c <= 0xFF3A) return c + 32;
  return c;
}

}  // namespace

size_t FindInvalidUtf8(std::string_view s) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const uint8_t b = p[i];
    if (b < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (b >= 0xC2 && b <= 0xDF) {
      len = 2;
    } else if (b >= 0xE0 && b <= 0xEF) {
      len = 3;
      if (b == 0xE0) lo = 0xA0;  // overlong
      if (b == 0xED) hi = 0x9F;  // surrogates
    } else if (b >= 0xF0 && b <= 0xF4) {
      len = 4;
      if (b == 0xF0) lo = 0x90;  // overlong
      if (b == 0xF4) hi = 0x8F;  // above U+10FFFF
    } else {
      return i;
    }
    if (i + len > n) return i;
    if (p[i + 1] < lo || p[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return i;
    }
    i += len;
  }
  return std::string_view::npos;
}

std::u32string Decode(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const size_t bad = FindInvalidUtf8(s.substr(i));
    const size_t good_end = bad == std::string_view::npos ? s.size() : i + bad;
    // Decode the well-formed prefix [i, good_end) without re-validating.
    const auto* p = reinterpret_cast<const uint8_t*>(s.data());
    while (i < good_end) {
      const uint8_t b = p[i];
      if (b < 0x80) {
        out.push_back(b);
        i += 1;
      } else if (b < 0xE0) {
        out.push_back(((b & 0x1F) << 6) | (p[i + 1] & 0x3F));
        i += 2;
      } else if (b < 0xF0) {
        out.push_back(((b & 0x0F) << 12) | ((p[i + 1] & 0x3F) << 6) | (p[i + 2] & 0x3F));
        i += 3;
      } else {
        out.push_back(((b & 0x07) << 18) | ((p[i + 1] & 0x3F) << 12) | ((p[i + 2] & 0x3F) << 6) |
                      (p[i + 3] & 0x3F));
        i += 4;
      }
    }
    if (i < s.size()) {
      out.push_back(0xFFFD);
      ++i;
    }
  }
  return out;
}

std::string Encode(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) {
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else if (c < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (c >> 6)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else if (c < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (c >> 12)));
      out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (c >> 18)));
      out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
  }
  return out;
}

bool IsSpace(char32_t c) {
  if (c < 0x80) return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20);
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool IsDecimalDigit(char32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  if (c >= 0x1D7CE && c <= 0x1D7FF) return true;  // mathematical digits (five styles of 0-9)
  for (char32_t zero : kDigitZeros) {
    if (c >= zero && c < zero + 10) return true;
  }
  return false;
}

bool IsWordChar(char32_t c) {
  if (c < 0x80) {
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
  }
  return !InRanges(kNonWord, c);
}

std::u32string Lower(std::u32string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (char32_t c : s) {
    if (c == 0x130) {  // Python: 'İ'.lower() == 'i̇' (two code points)
      out.push_back(U'i');
      out.push_back(0x307);
    } else {
      out.push_back(LowerOne(c));
    }
  }
  return out;
}

std::vector<std::u32string_view> SplitWhitespace(std::u32string_view s) {
  std::vector<std::u32string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && IsSpace(s[i])) ++i;
    size_t j = i;
    while (j < s.size() && !IsSpace(s[j])) ++j;
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

std::u32string_view StripWhitespace(std::u32string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && IsSpace(s[b])) ++b;
  while (e > b && IsSpace(s[e - 1])) --e;
  return s.substr(b, e - b);
}

std::u32string CollapseWhitespace(std::u32string_view s) {
  std::u32string out;
  for (std::u32string_view tok : SplitWhitespace(s)) {
    if (!out.empty()) out.push_back(U' ');
    out.append(tok);
  }
  return out;
}

}  // namespace kvwire::eval::text
