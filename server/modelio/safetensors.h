// Zero-copy reading of safetensors files and Hugging Face checkpoint directories.
//
// File layout: an 8-byte little-endian header length N, N bytes of JSON header (padded
// with spaces), then the data section. The header maps tensor names to
// {"dtype", "shape", "data_offsets": [begin, end]} with offsets relative to the data
// section, plus an optional "__metadata__" string->string map.
//
// Every field of the header is validated before any pointer into the file is handed out,
// because checkpoints come from disk and network: the parser is the fuzzing surface.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "server/modelio/dtype.h"

namespace kvwire::modelio {

// A tensor inside a mapped file. `data` points into the mapping (no copy) and stays valid
// as long as the SafetensorsFile / CheckpointReader it came from. The pointer is only
// byte-aligned in general (files written by WriteSafetensors keep the data section 8-byte
// aligned, but a tensor's offset within it is whatever the writer chose): read elements
// with memcpy, or check alignment before casting.
struct TensorView {
  std::string name;
  Dtype dtype = Dtype::kU8;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t nbytes = 0;

  // Element count (1 for a scalar, shape []).
  int64_t numel() const;
};

// A validated header entry; offsets are absolute positions in the file.
struct SafetensorsEntry {
  Dtype dtype = Dtype::kU8;
  std::vector<int64_t> shape;
  uint64_t file_offset = 0;
  uint64_t nbytes = 0;
};

struct SafetensorsHeader {
  std::map<std::string, SafetensorsEntry, std::less<>> tensors;
  std::map<std::string, std::string> metadata;  // "__metadata__"
  uint64_t data_offset = 0;                      // 8 + header length
};

// The largest header accepted, as in the reference implementation (100 MB). Real headers
// are well under 1 MB even for models with thousands of tensors.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// Validates a complete safetensors file held in memory and returns its header. Exposed
// so a fuzzer or a network receiver can check bytes without a file. `source` only labels
// error messages. Rejects (InvalidArgument): a file shorter than 8 bytes; a header length
// above the cap or past the end of the file; a header that is not a JSON object; an entry
// that is not {dtype, shape, data_offsets} with exactly those keys; an unknown dtype; a
// negative or non-integer dimension; offsets with end < begin or past the data section;
// a byte size != prod(shape) * dtype size (overflow checked); overlapping tensors; and,
// like the reference implementation, gaps between tensors or unused trailing bytes;
// non-string metadata values.
absl::StatusOr<SafetensorsHeader> ParseSafetensors(std::span<const uint8_t> file,
                                                   std::string_view source);

// One read-only, MAP_PRIVATE mapping of a .safetensors file.
class SafetensorsFile {
 public:
  // Maps and validates `path`. NotFound for a missing file, InvalidArgument for a
  // malformed one; every message starts with the path.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  bool Has(std::string_view name) const;
  // NotFound (naming the file and tensor) when absent.
  absl::StatusOr<TensorView> Get(std::string_view name) const;
  // Tensor names in sorted order.
  std::vector<std::string> Names() const;
  size_t size() const { return header_.tensors.size(); }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }

 private:
  friend class CheckpointReader;  // walks header_ to cross-check shards against the index
  SafetensorsFile(std::string path, const uint8_t* base, size_t length, SafetensorsHeader header)
      : path_(std::move(path)), base_(base), length_(length), header_(std::move(header)) {}

  std::string path_;
  const uint8_t* base_;
  size_t length_;
  SafetensorsHeader header_;
};

// A Hugging Face model directory: either one `model.safetensors`, or shards listed by
// `model.safetensors.index.json` ({"metadata": {...}, "weight_map": {tensor: shard}}).
// When both exist the single file wins, as in transformers.
class CheckpointReader {
 public:
  // Opens and validates the checkpoint. For a sharded one this maps every shard and
  // checks: shard names are plain file names inside `dir`; every shard exists and parses;
  // every tensor in weight_map is present in the shard it is mapped to; and every tensor a
  // shard contains is listed in weight_map for that shard (otherwise two readers could
  // disagree about which copy is the weight).
  static absl::StatusOr<std::unique_ptr<CheckpointReader>> Open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  bool Has(std::string_view name) const;
  // NotFound naming the checkpoint and tensor when absent.
  absl::StatusOr<TensorView> Get(std::string_view name) const;
  // All tensor names, sorted.
  std::vector<std::string> Names() const;
  // File names of the shards (one entry, "model.safetensors", when unsharded).
  std::vector<std::string> ShardFiles() const;

 private:
  explicit CheckpointReader(std::string dir) : dir_(std::move(dir)) {}

  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  // tensor name -> index into shards_
  std::map<std::string, size_t, std::less<>> index_;
};

// Copies a floating-point tensor (F16, BF16, F32, F64) into float32. InvalidArgument for
// any other dtype. Handles unaligned data.
absl::StatusOr<std::vector<float>> TensorToFloat(const TensorView& tensor);

// "[a, b, c]" - for error messages.
std::string ShapeToString(std::span<const int64_t> shape);

}  // namespace kvwire::modelio
