// Property: on any 32-lane rANS stream, intact or damaged, the vectorised decoder (AVX2, where
// the CPU has it) and the scalar one return the same status, and the same symbols when they
// succeed; neither reads out of bounds (ASan). Random bytes almost never form a 32-lane stream
// that gets past the table checks, so the input drives a real one instead: it seeds the symbols
// (skewed per column, so the encoder picks several contexts), then flips bytes of the encoded
// stream and cuts its end.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "kvcodec/rans.h"
#include "kvcodec/rans_wide.h"

namespace {

uint64_t Next(uint64_t& s) {
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 8) return 0;
  const int row_lens[] = {1, 16, 48, 64, 100};
  const int row_len = row_lens[data[0] % 5];
  const int bits = 1 + data[1] % 8;
  const size_t n = 65536 + (static_cast<size_t>(data[2]) << 8 | data[3]) % 40000;
  uint64_t seed = 0x9e3779b97f4a7c15ull;
  for (int i = 4; i < 8; ++i) seed = seed * 131 + data[i];
  std::vector<uint8_t> symbols(n);
  for (size_t i = 0; i < n; ++i) {
    const uint64_t r = Next(seed);
    const int col = static_cast<int>(i % row_len);
    const int spread = 1 + (col * 7) % (1 << bits);
    symbols[i] = static_cast<uint8_t>((r % 100 < 60 ? col % 5 : (r >> 8) % spread) & ((1 << bits) - 1));
  }
  std::vector<uint8_t> stream = kvcodec::RansEncode(symbols, row_len, bits);
  // Edits: (position, xor) pairs from the rest of the input; an odd byte count cuts the end.
  size_t i = 8;
  for (; i + 3 <= size; i += 3) {
    const size_t at = (static_cast<size_t>(data[i]) << 8 | data[i + 1]) % stream.size();
    stream[at] ^= data[i + 2];
  }
  if (i < size) stream.resize(stream.size() - std::min<size_t>(stream.size(), data[i]));

  std::vector<uint8_t> a(n), b(n);
  kvcodec::rans_wide::DisableForTesting(false);
  const absl::Status sa = kvcodec::RansDecode(stream, row_len, bits, a);
  kvcodec::rans_wide::DisableForTesting(true);
  const absl::Status sb = kvcodec::RansDecode(stream, row_len, bits, b);
  kvcodec::rans_wide::DisableForTesting(false);
  if (sa.ToString() != sb.ToString()) std::abort();
  if (sa.ok() && a != b) std::abort();
  if (i == size && size == 8 && (!sa.ok() || a != symbols)) std::abort();  // undamaged
  return 0;
}
