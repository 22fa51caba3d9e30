#include "server/modelio/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <system_error>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/json_nesting.h"
#include "server/modelio/file_util.h"
#include "server/modelio/status_macros.h"

namespace kvwire::modelio {
namespace {

using nlohmann::json;
using internal::AV;

// TensorView hands out raw little-endian bytes and TensorToFloat memcpy's them into host
// values; a big-endian port would need byte swapping in both.
static_assert(std::endian::native == std::endian::little, "modelio assumes a little-endian host");

constexpr char kSingleFile[] = "model.safetensors";
constexpr char kIndexFile[] = "model.safetensors.index.json";
// Index files list one line per tensor; even 100k tensors stay far below this.
constexpr std::uintmax_t kMaxIndexBytes = 64u << 20;

absl::Status Malformed(std::string_view source, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(AV(source), ": ", AV(what)));
}

absl::Status MalformedTensor(std::string_view source, std::string_view name,
                             std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(AV(source), ": tensor '", AV(name), "': ", AV(what)));
}

// Short rendering of an offending JSON value: headers can be 100 MB, messages must not.
std::string Describe(const json& value) {
  std::string text = value.dump(-1, ' ', false, json::error_handler_t::replace);
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return text;
}

// Reads a non-negative JSON integer; false for anything else (negative, float, string,
// or a value nlohmann had to store as float because it does not fit in 64 bits).
bool GetUnsigned(const json& value, uint64_t* out) {
  if (!value.is_number_unsigned()) return false;
  *out = value.get<uint64_t>();
  return true;
}

absl::StatusOr<SafetensorsEntry> ParseEntry(std::string_view source, const std::string& name,
                                            const json& value, uint64_t data_size,
                                            uint64_t data_offset, uint64_t* begin_out) {
  if (!value.is_object()) {
    return MalformedTensor(source, name, absl::StrCat("entry must be an object, got ",
                                                      value.type_name()));
  }
  for (const auto& [key, unused] : value.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets") {
      return MalformedTensor(source, name, absl::StrCat("unexpected key '", key, "'"));
    }
  }
  auto dtype_it = value.find("dtype");
  auto shape_it = value.find("shape");
  auto offsets_it = value.find("data_offsets");
  if (dtype_it == value.end() || shape_it == value.end() || offsets_it == value.end()) {
    return MalformedTensor(source, name, "entry needs 'dtype', 'shape' and 'data_offsets'");
  }

  SafetensorsEntry entry;
  if (!dtype_it->is_string()) return MalformedTensor(source, name, "dtype must be a string");
  const std::string dtype_name = dtype_it->get<std::string>();
  std::optional<Dtype> dtype = ParseDtype(dtype_name);
  if (!dtype.has_value()) {
    return MalformedTensor(source, name, absl::StrCat("unknown dtype '", dtype_name, "'"));
  }
  entry.dtype = *dtype;

  if (!shape_it->is_array()) return MalformedTensor(source, name, "shape must be a list");
  // numel accumulates in uint64 with explicit overflow checks: a hostile header can name
  // dimensions whose product wraps around to match a small byte range.
  uint64_t numel = 1;
  for (const json& dim_json : *shape_it) {
    uint64_t dim;
    if (!GetUnsigned(dim_json, &dim) ||
        dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return MalformedTensor(source, name,
                             absl::StrCat("shape must hold non-negative integers, got ",
                                          Describe(*shape_it)));
    }
    entry.shape.push_back(static_cast<int64_t>(dim));
    if (__builtin_mul_overflow(numel, dim, &numel)) {
      return MalformedTensor(source, name, "element count overflows 64 bits");
    }
  }
  uint64_t expected_bytes;
  if (__builtin_mul_overflow(numel, static_cast<uint64_t>(DtypeSize(entry.dtype)),
                             &expected_bytes)) {
    return MalformedTensor(source, name, "byte size overflows 64 bits");
  }

  uint64_t begin, end;
  if (!offsets_it->is_array() || offsets_it->size() != 2 || !GetUnsigned((*offsets_it)[0], &begin) ||
      !GetUnsigned((*offsets_it)[1], &end)) {
    return MalformedTensor(source, name, "data_offsets must be two non-negative integers");
  }
  if (end < begin) {
    return MalformedTensor(source, name,
                           absl::StrCat("data_offsets end ", end, " < begin ", begin));
  }
  if (end > data_size) {
    return MalformedTensor(source, name,
                           absl::StrCat("data_offsets [", begin, ", ", end,
                                        "] extend past the data section (", data_size,
                                        " bytes)"));
  }
  entry.nbytes = end - begin;
  if (entry.nbytes != expected_bytes) {
    return MalformedTensor(
        source, name,
        absl::StrCat("holds ", entry.nbytes, " bytes but ", AV(DtypeName(entry.dtype)), " ",
                     ShapeToString(entry.shape), " needs ", expected_bytes));
  }
  entry.file_offset = data_offset + begin;  // cannot overflow: both bounded by file size
  *begin_out = begin;
  return entry;
}

absl::StatusOr<json> ParseJson(std::string_view text, std::string_view source,
                               std::string_view what) {
  // nlohmann reports syntax errors by throwing; this is the only place modelio lets it,
  // and the exception never leaves the function.
  if (absl::Status deep = common::CheckJsonNesting(text, what); !deep.ok()) {
    return Malformed(source, std::string(deep.message()));
  }
  try {
    return json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    return Malformed(source, absl::StrCat(AV(what), " is not valid JSON: ", e.what()));
  }
}

// Keeps error messages anchored on the file when a lower layer produced them.
absl::Status Prefix(const absl::Status& status, std::string_view prefix) {
  return absl::Status(status.code(), absl::StrCat(AV(prefix), status.message()));
}

// A shard name from an index must be a plain file name: "../x" or "/etc/x" would let a
// downloaded index read outside the checkpoint directory.
bool IsPlainFileName(std::string_view name) {
  return !name.empty() && name != "." && name != ".." &&
         name.find('/') == std::string_view::npos && name.find('\0') == std::string_view::npos;
}

}  // namespace

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeToString(std::span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::StatusOr<SafetensorsHeader> ParseSafetensors(std::span<const uint8_t> file,
                                                   std::string_view source) {
  if (file.size() < 8) {
    return Malformed(source, absl::StrCat("file is ", file.size(),
                                          " bytes, too short for the 8-byte header length"));
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | file[i];  // little-endian
  if (header_len > kMaxSafetensorsHeaderBytes) {
    return Malformed(source, absl::StrCat("header length ", header_len, " exceeds the limit of ",
                                          kMaxSafetensorsHeaderBytes));
  }
  if (header_len > file.size() - 8) {
    return Malformed(source, absl::StrCat("header length ", header_len, " runs past the end of the ",
                                          file.size(), "-byte file (truncated?)"));
  }
  const std::string_view text(reinterpret_cast<const char*>(file.data()) + 8, header_len);
  // The format requires the JSON to start right away; checking the first byte also turns
  // "random bytes" into a clear error before the JSON parser sees them.
  if (text.empty() || text.front() != '{') {
    return Malformed(source, "header does not start with '{'");
  }
  MODELIO_ASSIGN_OR_RETURN(json header, ParseJson(text, source, "header"));
  if (!header.is_object()) return Malformed(source, "header must be a JSON object");

  SafetensorsHeader out;
  out.data_offset = 8 + header_len;
  const uint64_t data_size = file.size() - out.data_offset;

  struct Span {
    uint64_t begin, end;
    const std::string* name;
  };
  std::vector<Span> spans;
  spans.reserve(header.size());

  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) return Malformed(source, "__metadata__ must be an object");
      for (const auto& [key, meta] : value.items()) {
        if (!meta.is_string()) {
          return Malformed(source, absl::StrCat("__metadata__ value for '", key,
                                                "' must be a string"));
        }
        out.metadata.emplace(key, meta.get<std::string>());
      }
      continue;
    }
    if (name.empty()) return Malformed(source, "empty tensor name");
    uint64_t begin = 0;
    MODELIO_ASSIGN_OR_RETURN(SafetensorsEntry entry,
                             ParseEntry(source, name, value, data_size, out.data_offset, &begin));
    const uint64_t nbytes = entry.nbytes;
    auto [it, inserted] = out.tensors.emplace(name, std::move(entry));
    // nlohmann keeps the last of duplicate keys, so this cannot trigger; kept as a guard.
    if (!inserted) return MalformedTensor(source, name, "appears twice");
    spans.push_back({begin, begin + nbytes, &it->first});
  }

  // Tensors must tile the data section exactly: sorted by offset, each starts where the
  // previous one ended and the last ends at the end of the file. This is the reference
  // implementation's rule; it rules out overlaps (two names aliasing the same bytes, which
  // a writer through one view would corrupt through the other) and hidden payloads.
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expected = 0;
  const std::string* previous = nullptr;
  for (const Span& s : spans) {
    if (s.begin < expected) {
      return Malformed(source, absl::StrCat("tensor '", *s.name, "' [", s.begin, ", ", s.end,
                                            ") overlaps tensor '", *previous, "' (ends at ",
                                            expected, ")"));
    }
    if (s.begin > expected) {
      return Malformed(source, absl::StrCat("gap of ", s.begin - expected,
                                            " unused bytes before tensor '", *s.name, "'"));
    }
    expected = s.end;
    previous = s.name;
  }
  if (expected != data_size) {
    return Malformed(source, absl::StrCat("data section has ", data_size - expected,
                                          " trailing bytes not covered by any tensor"));
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// SafetensorsFile

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    return absl::UnavailableError(absl::StrCat(path, ": open failed: ", std::strerror(err)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::UnavailableError(absl::StrCat(path, ": fstat failed: ", std::strerror(err)));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  const size_t length = static_cast<size_t>(st.st_size);
  if (length < 8) {
    // mmap of a zero-length file fails; report the format problem instead.
    ::close(fd);
    return Malformed(path, absl::StrCat("file is ", length,
                                        " bytes, too short for the 8-byte header length"));
  }
  // MAP_PRIVATE + PROT_READ: the view is immutable for us even if the file is later
  // rewritten through another descriptor (modulo truncation, which would SIGBUS - the
  // writer in this module replaces files by rename, so live files are never truncated).
  void* base = ::mmap(nullptr, length, PROT_READ, MAP_PRIVATE, fd, 0);
  const int mmap_errno = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (base == MAP_FAILED) {
    return absl::UnavailableError(absl::StrCat(path, ": mmap failed: ", std::strerror(mmap_errno)));
  }
  const auto* bytes = static_cast<const uint8_t*>(base);
  absl::StatusOr<SafetensorsHeader> header = ParseSafetensors({bytes, length}, path);
  if (!header.ok()) {
    ::munmap(base, length);
    return header.status();
  }
  return std::unique_ptr<SafetensorsFile>(
      new SafetensorsFile(path, bytes, length, *std::move(header)));
}

SafetensorsFile::~SafetensorsFile() {
  ::munmap(const_cast<uint8_t*>(base_), length_);
}

bool SafetensorsFile::Has(std::string_view name) const {
  return header_.tensors.find(name) != header_.tensors.end();
}

absl::StatusOr<TensorView> SafetensorsFile::Get(std::string_view name) const {
  auto it = header_.tensors.find(name);
  if (it == header_.tensors.end()) {
    return absl::NotFoundError(absl::StrCat(path_, ": no tensor named '", AV(name), "'"));
  }
  const SafetensorsEntry& e = it->second;
  return TensorView{it->first, e.dtype, e.shape, base_ + e.file_offset,
                    static_cast<size_t>(e.nbytes)};
}

std::vector<std::string> SafetensorsFile::Names() const {
  std::vector<std::string> names;
  names.reserve(header_.tensors.size());
  for (const auto& [name, unused] : header_.tensors) names.push_back(name);
  return names;
}

// ---------------------------------------------------------------------------------------
// CheckpointReader

absl::StatusOr<std::unique_ptr<CheckpointReader>> CheckpointReader::Open(const std::string& dir) {
  namespace fs = std::filesystem;
  const fs::path root(dir);
  std::unique_ptr<CheckpointReader> reader(new CheckpointReader(dir));
  std::error_code ec;

  if (fs::exists(root / kSingleFile, ec)) {
    MODELIO_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file,
                             SafetensorsFile::Open((root / kSingleFile).string()));
    for (const auto& [name, unused] : file->header_.tensors) reader->index_.emplace(name, 0);
    reader->shards_.push_back(std::move(file));
    return reader;
  }

  const fs::path index_path = root / kIndexFile;
  if (!fs::exists(index_path, ec)) {
    return absl::NotFoundError(absl::StrCat("checkpoint ", dir, ": neither ", kSingleFile,
                                            " nor ", kIndexFile, " exists"));
  }
  const std::string source = index_path.string();
  MODELIO_ASSIGN_OR_RETURN(std::string text, internal::ReadSmallFile(index_path, kMaxIndexBytes));
  MODELIO_ASSIGN_OR_RETURN(json index, ParseJson(text, source, "index"));
  if (!index.is_object()) return Malformed(source, "index must be a JSON object");
  if (auto meta = index.find("metadata"); meta != index.end() && !meta->is_null() &&
                                          !meta->is_object()) {
    return Malformed(source, "'metadata' must be an object");
  }
  auto map_it = index.find("weight_map");
  if (map_it == index.end() || !map_it->is_object()) {
    return Malformed(source, "'weight_map' must be an object of tensor name -> shard file");
  }
  if (map_it->empty()) return Malformed(source, "'weight_map' is empty");

  // tensor -> shard file name, and the distinct shards in sorted order.
  std::map<std::string, std::string, std::less<>> weight_map;
  std::set<std::string> shard_names;
  for (const auto& [tensor, shard] : map_it->items()) {
    if (!shard.is_string()) {
      return Malformed(source, absl::StrCat("weight_map entry for '", tensor,
                                            "' must be a file name string"));
    }
    std::string shard_name = shard.get<std::string>();
    if (!IsPlainFileName(shard_name)) {
      return Malformed(source, absl::StrCat("weight_map maps '", tensor, "' to '", shard_name,
                                            "', which is not a plain file name"));
    }
    shard_names.insert(shard_name);
    weight_map.emplace(tensor, std::move(shard_name));
  }

  std::map<std::string, size_t, std::less<>> shard_index;
  for (const std::string& shard_name : shard_names) {
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> shard =
        SafetensorsFile::Open((root / shard_name).string());
    if (!shard.ok()) {
      return Prefix(shard.status(), absl::StrCat(source, ": shard '", shard_name, "': "));
    }
    shard_index.emplace(shard_name, reader->shards_.size());
    reader->shards_.push_back(*std::move(shard));
  }

  for (const auto& [tensor, shard_name] : weight_map) {
    const size_t i = shard_index.at(shard_name);
    if (!reader->shards_[i]->Has(tensor)) {
      return absl::NotFoundError(absl::StrCat(source, ": tensor '", tensor,
                                              "' is mapped to shard '", shard_name,
                                              "' but that shard does not contain it"));
    }
    reader->index_.emplace(tensor, i);
  }
  for (const auto& [shard_name, i] : shard_index) {
    for (const auto& [tensor, unused] : reader->shards_[i]->header_.tensors) {
      auto it = weight_map.find(tensor);
      if (it == weight_map.end()) {
        return Malformed(source, absl::StrCat("shard '", shard_name, "' contains tensor '",
                                              tensor, "', which weight_map does not list"));
      }
      if (it->second != shard_name) {
        return Malformed(source, absl::StrCat("shard '", shard_name, "' contains tensor '",
                                              tensor, "', which weight_map assigns to '",
                                              it->second, "'"));
      }
    }
  }
  return reader;
}

bool CheckpointReader::Has(std::string_view name) const {
  return index_.find(name) != index_.end();
}

absl::StatusOr<TensorView> CheckpointReader::Get(std::string_view name) const {
  auto it = index_.find(name);
  if (it == index_.end()) {
    return absl::NotFoundError(
        absl::StrCat("checkpoint ", dir_, ": no tensor named '", AV(name), "'"));
  }
  return shards_[it->second]->Get(name);
}

std::vector<std::string> CheckpointReader::Names() const {
  std::vector<std::string> names;
  names.reserve(index_.size());
  for (const auto& [name, unused] : index_) names.push_back(name);
  return names;
}

std::vector<std::string> CheckpointReader::ShardFiles() const {
  std::vector<std::string> files;
  for (const auto& shard : shards_) {
    files.push_back(std::filesystem::path(shard->path()).filename().string());
  }
  return files;
}

// ---------------------------------------------------------------------------------------

absl::StatusOr<std::vector<float>> TensorToFloat(const TensorView& t) {
  const size_t elem = DtypeSize(t.dtype);
  const size_t n = t.nbytes / elem;
  std::vector<float> out(n);
  const uint8_t* p = t.data;
  // memcpy per element: the mapping gives no alignment guarantee for a tensor.
  switch (t.dtype) {
    case Dtype::kF32:
      if (n > 0) std::memcpy(out.data(), p, n * sizeof(float));
      return out;
    case Dtype::kF64:
      for (size_t i = 0; i < n; ++i) {
        double v;
        std::memcpy(&v, p + i * 8, 8);
        out[i] = static_cast<float>(v);
      }
      return out;
    case Dtype::kF16:
    case Dtype::kBF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t v;
        std::memcpy(&v, p + i * 2, 2);
        out[i] = t.dtype == Dtype::kF16 ? HalfToFloat(v) : BF16ToFloat(v);
      }
      return out;
    default:
      return absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "' has dtype ",
                                                     AV(DtypeName(t.dtype)),
                                                     ", not a floating-point type"));
  }
}

}  // namespace kvwire::modelio
