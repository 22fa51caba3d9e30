// Small UTF-8 helpers shared by the tokenizer pieces (and the CLI, which checks its input).
#ifndef KVWIRE_SERVER_TOKENIZER_UTF8_H_
#define KVWIRE_SERVER_TOKENIZER_UTF8_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace kvwire::tokenizer::utf8 {

// U+FFFD, what invalid input decodes to.
inline constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

// Returns the byte offset of the first invalid UTF-8 byte (overlong forms, surrogates and
// code points above U+10FFFF count as invalid), or npos when `s` is valid.
size_t FindInvalid(std::string_view s);

// Length in bytes of a complete, valid sequence starting at s[i]; 0 if s[i..] does not start
// with one (invalid lead byte, bad continuation, or truncated).
size_t ValidSequenceLength(std::string_view s, size_t i);

// Decodes the code point at s[i], which must start a valid sequence (callers validate first).
// Sets *len to the sequence length.
char32_t DecodeAt(std::string_view s, size_t i, size_t* len);

void Append(char32_t cp, std::string* out);

// Appends `s` to `out`, replacing each maximal invalid subsequence with U+FFFD the way
// Python's bytes.decode('utf-8', 'replace') and Rust's from_utf8_lossy do.
void AppendLossy(std::string_view s, std::string* out);

// For a byte string that may end in the middle of a multi-byte sequence: the number of bytes
// at the end that form a proper prefix of a valid sequence (0..3). Those are held back by the
// streaming decoder until the next token completes them.
size_t IncompleteTailLength(std::string_view s);

}  // namespace kvwire::tokenizer::utf8

#endif  // KVWIRE_SERVER_TOKENIZER_UTF8_H_
