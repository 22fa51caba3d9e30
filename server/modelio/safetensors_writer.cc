#include "server/modelio/safetensors_writer.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>
#include <system_error>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "server/modelio/file_util.h"
#include "server/modelio/status_macros.h"

namespace kvwire::modelio {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// Byte size of a spec, overflow-checked: a shape from a caller's bug must not wrap into a
// small, valid-looking size.
absl::StatusOr<uint64_t> ByteSize(const TensorSpec& spec) {
  uint64_t n = DtypeSize(spec.dtype);
  for (int64_t dim : spec.shape) {
    if (dim < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", spec.name, "' has a negative dimension in shape [",
                       absl::StrJoin(spec.shape, ", "), "]"));
    }
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(dim), &n)) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", spec.name, "': byte size overflows 64 bits"));
    }
  }
  return n;
}

absl::StatusOr<std::vector<uint64_t>> CheckSpecs(std::span<const TensorSpec> specs) {
  std::set<std::string_view> seen;
  std::vector<uint64_t> sizes;
  sizes.reserve(specs.size());
  for (const TensorSpec& spec : specs) {
    if (spec.name.empty()) return absl::InvalidArgumentError("empty tensor name");
    if (spec.name == "__metadata__") {
      return absl::InvalidArgumentError("'__metadata__' is reserved and cannot name a tensor");
    }
    if (!seen.insert(spec.name).second) {
      return absl::InvalidArgumentError(absl::StrCat("duplicate tensor name '", spec.name, "'"));
    }
    MODELIO_ASSIGN_OR_RETURN(uint64_t size, ByteSize(spec));
    sizes.push_back(size);
  }
  return sizes;
}

// Header JSON with offsets for the given order, padded with spaces to a multiple of 8 so
// the data section (at 8 + header length) is 8-byte aligned.
absl::StatusOr<std::string> BuildHeader(std::span<const TensorSpec> specs,
                                        std::span<const uint64_t> sizes,
                                        const SafetensorsMetadata& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    header[specs[i].name] = {{"dtype", std::string(DtypeName(specs[i].dtype))},
                             {"shape", specs[i].shape},
                             {"data_offsets", {offset, offset + sizes[i]}}};
    offset += sizes[i];  // no overflow: the total was checked by the caller
  }
  std::string text;
  try {
    // Strict UTF-8 handling throws on invalid names; reported as a status, never escapes.
    text = header.dump();
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor name or metadata is not valid UTF-8: ", e.what()));
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

class FileCloser {
 public:
  explicit FileCloser(std::FILE* f) : f_(f) {}
  ~FileCloser() {
    if (f_ != nullptr) std::fclose(f_);
  }
  // Closes now and reports whether buffered data reached the file.
  bool Close() {
    const bool ok = std::fclose(f_) == 0;
    f_ = nullptr;
    return ok;
  }

 private:
  std::FILE* f_;
};

absl::Status WriteFile(const fs::path& path, std::span<const TensorSpec> specs,
                       std::span<const size_t> order, const std::vector<uint64_t>& all_sizes,
                       const TensorFiller& fill, const SafetensorsMetadata& metadata) {
  std::vector<TensorSpec> file_specs;
  std::vector<uint64_t> sizes;
  uint64_t total = 0;
  uint64_t largest = 0;
  for (size_t i : order) {
    file_specs.push_back(specs[i]);
    sizes.push_back(all_sizes[i]);
    if (__builtin_add_overflow(total, all_sizes[i], &total)) {
      return absl::InvalidArgumentError("total tensor size overflows 64 bits");
    }
    largest = std::max(largest, all_sizes[i]);
  }
  MODELIO_ASSIGN_OR_RETURN(std::string header, BuildHeader(file_specs, sizes, metadata));

  fs::path tmp = path;
  tmp += ".tmp";
  std::FILE* raw = std::fopen(tmp.c_str(), "wb");
  if (raw == nullptr) {
    return absl::UnavailableError(
        absl::StrCat(tmp.string(), ": cannot create: ", std::strerror(errno)));
  }
  FileCloser file(raw);
  auto fail = [&](std::string_view what) {
    file.Close();
    std::error_code ec;
    fs::remove(tmp, ec);
    return absl::UnavailableError(absl::StrCat(tmp.string(), ": ", internal::AV(what)));
  };

  uint8_t length_bytes[8];
  const uint64_t header_len = header.size();
  for (int i = 0; i < 8; ++i) length_bytes[i] = static_cast<uint8_t>(header_len >> (8 * i));
  if (std::fwrite(length_bytes, 1, 8, raw) != 8 ||
      std::fwrite(header.data(), 1, header.size(), raw) != header.size()) {
    return fail("write failed");
  }

  // One buffer, sized for the largest tensor and reused: memory is bounded by a tensor.
  std::vector<uint8_t> buffer;
  if (largest > buffer.max_size()) return fail("tensor too large for memory");
  buffer.resize(static_cast<size_t>(largest));
  for (size_t k = 0; k < order.size(); ++k) {
    const std::span<uint8_t> out(buffer.data(), static_cast<size_t>(sizes[k]));
    if (absl::Status st = fill(order[k], out); !st.ok()) {
      file.Close();
      std::error_code ec;
      fs::remove(tmp, ec);
      return absl::Status(st.code(), absl::StrCat("tensor '", file_specs[k].name, "': ",
                                                  st.message()));
    }
    if (std::fwrite(out.data(), 1, out.size(), raw) != out.size()) return fail("write failed");
  }
  if (!file.Close()) {
    std::error_code ec;
    fs::remove(tmp, ec);
    return absl::UnavailableError(absl::StrCat(tmp.string(), ": close failed"));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    return absl::UnavailableError(absl::StrCat(path.string(), ": rename failed: ", ec.message()));
  }
  return absl::OkStatus();
}

std::vector<TensorSpec> SpecsOf(std::span<const TensorToWrite> tensors) {
  std::vector<TensorSpec> specs;
  specs.reserve(tensors.size());
  for (const TensorToWrite& t : tensors) specs.push_back({t.name, t.dtype, t.shape});
  return specs;
}

// Adapts in-memory tensors to the streaming writer after checking each buffer's length.
absl::StatusOr<TensorFiller> CopyFiller(std::span<const TensorToWrite> tensors,
                                        const std::vector<uint64_t>& sizes) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (tensors[i].data.size() != sizes[i]) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", tensors[i].name, "': ", tensors[i].data.size(), " bytes given but ",
          internal::AV(DtypeName(tensors[i].dtype)), " [", absl::StrJoin(tensors[i].shape, ", "), "] needs ",
          sizes[i]));
    }
  }
  return TensorFiller([tensors](size_t index, std::span<uint8_t> out) {
    if (!out.empty()) std::memcpy(out.data(), tensors[index].data.data(), out.size());
    return absl::OkStatus();
  });
}

std::vector<size_t> Iota(size_t n) {
  std::vector<size_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = i;
  return v;
}

}  // namespace

absl::Status WriteSafetensors(const std::string& path, std::span<const TensorSpec> specs,
                              const TensorFiller& fill, const SafetensorsMetadata& metadata) {
  MODELIO_ASSIGN_OR_RETURN(std::vector<uint64_t> sizes, CheckSpecs(specs));
  return WriteFile(path, specs, Iota(specs.size()), sizes, fill, metadata);
}

absl::Status WriteSafetensors(const std::string& path, std::span<const TensorToWrite> tensors,
                              const SafetensorsMetadata& metadata) {
  const std::vector<TensorSpec> specs = SpecsOf(tensors);
  MODELIO_ASSIGN_OR_RETURN(std::vector<uint64_t> sizes, CheckSpecs(specs));
  MODELIO_ASSIGN_OR_RETURN(TensorFiller fill, CopyFiller(tensors, sizes));
  return WriteFile(path, specs, Iota(specs.size()), sizes, fill, metadata);
}

absl::Status WriteShardedCheckpoint(const std::string& dir, std::span<const TensorSpec> specs,
                                    const TensorFiller& fill, size_t max_shard_bytes,
                                    const SafetensorsMetadata& metadata) {
  MODELIO_ASSIGN_OR_RETURN(std::vector<uint64_t> sizes, CheckSpecs(specs));
  const fs::path root(dir);
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat(dir, ": cannot create directory: ", ec.message()));
  }
  SafetensorsMetadata file_metadata = metadata;
  file_metadata.emplace("format", "pt");  // keeps a caller-provided format

  // Greedy packing in order, like transformers' shard_checkpoint: start a new shard when
  // the next tensor would overflow the current one, unless the current one is empty.
  std::vector<std::vector<size_t>> shards(1);
  uint64_t current = 0;
  uint64_t total = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    // Written without current + sizes[i], which could overflow.
    const bool full = current > max_shard_bytes || sizes[i] > max_shard_bytes - current;
    if (max_shard_bytes > 0 && !shards.back().empty() && full) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(i);
    current += sizes[i];  // current <= total, so checking total covers it
    if (__builtin_add_overflow(total, sizes[i], &total)) {
      return absl::InvalidArgumentError("total checkpoint size overflows 64 bits");
    }
  }

  const fs::path single = root / "model.safetensors";
  const fs::path index = root / "model.safetensors.index.json";
  if (shards.size() == 1) {
    MODELIO_RETURN_IF_ERROR(WriteFile(single, specs, shards[0], sizes, fill, file_metadata));
    fs::remove(index, ec);  // stale index from an earlier sharded write
    return absl::OkStatus();
  }

  json weight_map = json::object();
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string name =
        absl::StrFormat("model-%05d-of-%05d.safetensors", s + 1, shards.size());
    MODELIO_RETURN_IF_ERROR(WriteFile(root / name, specs, shards[s], sizes, fill, file_metadata));
    for (size_t i : shards[s]) weight_map[specs[i].name] = name;
  }
  json index_json = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  std::string text;
  try {
    text = index_json.dump(2) + "\n";
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("tensor name is not valid UTF-8: ", e.what()));
  }
  // The index goes last: until it exists, no reader can see a partial shard set.
  MODELIO_RETURN_IF_ERROR(internal::WriteFileAtomically(index, text));
  // A single file takes precedence over an index, so an old one must go.
  fs::remove(single, ec);
  return absl::OkStatus();
}

absl::Status WriteShardedCheckpoint(const std::string& dir, std::span<const TensorToWrite> tensors,
                                    size_t max_shard_bytes, const SafetensorsMetadata& metadata) {
  const std::vector<TensorSpec> specs = SpecsOf(tensors);
  MODELIO_ASSIGN_OR_RETURN(std::vector<uint64_t> sizes, CheckSpecs(specs));
  MODELIO_ASSIGN_OR_RETURN(TensorFiller fill, CopyFiller(tensors, sizes));
  return WriteShardedCheckpoint(dir, specs, fill, max_shard_bytes, metadata);
}

}  // namespace kvwire::modelio
