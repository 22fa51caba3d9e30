// Compact coding of what the scout and text paths send instead of a KV cache: the prompt's token
// ids and the set of kept positions. A 1024-token prompt costs about a kilobyte, against
// megabytes for even a heavily compressed cache.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kvwire::scout {

// Most tokens a coded prompt may hold; decoding never allocates beyond it.
inline constexpr int64_t kMaxPromptTokens = int64_t{1} << 22;

// LEB128 varints of the ids (each >= 0), compressed with zstd. InvalidArgument for a negative id.
absl::StatusOr<std::string> EncodeTokenIds(std::span<const int32_t> ids);
// InvalidArgument for anything EncodeTokenIds cannot have produced (bad zstd, a truncated or
// overlong varint, an id >= 2^31, more than max_tokens ids).
absl::StatusOr<std::vector<int32_t>> DecodeTokenIds(std::string_view bytes,
                                                    int64_t max_tokens = kMaxPromptTokens);

// Sorted unique positions in [0, num_tokens): a tag byte, then a bitmap of num_tokens bits or
// the gaps as varints, whichever is shorter. InvalidArgument for unsorted, duplicate or
// out-of-range positions.
absl::StatusOr<std::string> EncodePositions(std::span<const int32_t> positions, int num_tokens);
// The positions back; InvalidArgument for a bad tag, a bitmap of the wrong length or with bits
// past num_tokens, a truncated varint, or a position outside [0, num_tokens).
absl::StatusOr<std::vector<int32_t>> DecodePositions(std::string_view bytes, int num_tokens);

}  // namespace kvwire::scout
