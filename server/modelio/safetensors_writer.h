// Writing safetensors files and Hugging Face checkpoint directories.
//
// Files are byte-compatible with the reference implementation: 8-byte little-endian header
// length, compact JSON header padded with spaces so the data section starts on an 8-byte
// boundary, tensors packed back to back with no gaps. Tensor data is written in the order
// given (callers that want each tensor aligned to its element size can order by dtype).
// Every file is written to "<path>.tmp" and renamed into place, so readers - which mmap -
// never observe a partial or truncated file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "server/modelio/dtype.h"

namespace kvwire::modelio {

// Name, dtype and shape of a tensor to be written; its data comes from elsewhere.
struct TensorSpec {
  std::string name;
  Dtype dtype = Dtype::kF32;
  std::vector<int64_t> shape;
};

// A tensor whose bytes already exist in memory (not owned; must outlive the write call).
struct TensorToWrite {
  std::string name;
  Dtype dtype = Dtype::kF32;
  std::vector<int64_t> shape;
  std::span<const uint8_t> data;  // exactly prod(shape) * DtypeSize(dtype) bytes
};

// Produces the bytes of specs[index] into `out` (already sized to the tensor). Lets a
// caller generate or convert tensors one at a time, so memory stays at one tensor rather
// than one checkpoint.
using TensorFiller = std::function<absl::Status(size_t index, std::span<uint8_t> out)>;

using SafetensorsMetadata = std::map<std::string, std::string>;

// Writes one .safetensors file. InvalidArgument for an empty, duplicate, "__metadata__"
// or non-UTF-8 name, a negative dimension, a size that overflows, or data whose length
// does not match the shape. Unavailable for I/O failures.
absl::Status WriteSafetensors(const std::string& path, std::span<const TensorToWrite> tensors,
                              const SafetensorsMetadata& metadata = {});
absl::Status WriteSafetensors(const std::string& path, std::span<const TensorSpec> specs,
                              const TensorFiller& fill, const SafetensorsMetadata& metadata = {});

// Writes the weights of a Hugging Face checkpoint into `dir` (created if needed).
// max_shard_bytes == 0, or everything fitting in one shard: a single model.safetensors.
// Otherwise tensors are packed greedily, in order, into shards of at most max_shard_bytes
// (a tensor larger than the limit gets a shard to itself, as transformers does), named
// model-00001-of-0000N.safetensors, plus model.safetensors.index.json with
// metadata.total_size and the weight_map. Each file's __metadata__ gets "format": "pt"
// unless `metadata` sets it, because transformers refuses safetensors metadata without a
// known format. A stale file of the other layout (model.safetensors vs. the index) is
// removed so readers cannot pick up old weights.
absl::Status WriteShardedCheckpoint(const std::string& dir, std::span<const TensorToWrite> tensors,
                                    size_t max_shard_bytes,
                                    const SafetensorsMetadata& metadata = {});
absl::Status WriteShardedCheckpoint(const std::string& dir, std::span<const TensorSpec> specs,
                                    const TensorFiller& fill, size_t max_shard_bytes,
                                    const SafetensorsMetadata& metadata = {});

}  // namespace kvwire::modelio
