// Internal to kvwire_eval: the handful of Python `str` behaviours the official scorers rely on,
// re-done over Unicode code points so that C++ scores agree with the Python ones.
//
// The reference scorers (LongBench metrics.py, SQuAD evaluate-v2.0, RULER evaluate.py, the
// `rouge` and `fuzzywuzzy` packages) all operate on Python 3 `str`, i.e. on code points, and use
// str.lower(), str.split(), `\b`, `\w` and `\d` with their Unicode meanings. Working on UTF-8 bytes
// would change token boundaries and string-similarity ratios for any non-ASCII text, so every
// scorer decodes to std::u32string first.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kvwire::eval::text {

// Byte offset of the first byte that does not start a well-formed UTF-8 sequence (overlong forms,
// surrogates and values above U+10FFFF are ill-formed), or std::string_view::npos if `s` is valid.
size_t FindInvalidUtf8(std::string_view s);

// UTF-8 -> code points. Ill-formed bytes decode to U+FFFD one byte at a time (Python's
// errors="replace" behaves similarly); the loaders reject such input before it gets here, so this
// only matters for raw model predictions.
std::u32string Decode(std::string_view s);
std::string Encode(std::u32string_view s);

// Python str.isspace(): Unicode White_Space plus the ASCII information separators 0x1C-0x1F.
bool IsSpace(char32_t c);

// Python re `\d` on str (Unicode category Nd). Covers the BMP decimal-digit blocks and the
// mathematical digits; other supplementary-plane digit sets are not recognised.
bool IsDecimalDigit(char32_t c);

// Python re `\w` on str: str.isalnum() or '_'. ASCII is exact; outside ASCII every code point is a
// word character except whitespace, controls, combining marks and the common punctuation/symbol
// blocks (Latin-1, general punctuation, arrows/maths/box drawing, CJK and fullwidth punctuation,
// emoji). This approximation only affects where `\b` falls next to rare symbols.
bool IsWordChar(char32_t c);

// Python str.lower() for ASCII, Latin-1, Latin Extended-A and most of -B and Additional, Greek,
// Cyrillic, Armenian, Georgian, Glagolitic, Roman numerals, circled and fullwidth letters. U+0130
// lowers to "i" U+0307 as in Python. Not handled: Greek final-sigma context and rarer scripts,
// which are left unchanged.
std::u32string Lower(std::u32string_view s);

// Python str.split() with no argument: runs of IsSpace() separate tokens; no empty tokens.
std::vector<std::u32string_view> SplitWhitespace(std::u32string_view s);

// Python str.strip() with no argument.
std::u32string_view StripWhitespace(std::u32string_view s);

// Python " ".join(s.split()).
std::u32string CollapseWhitespace(std::u32string_view s);

}  // namespace kvwire::eval::text
