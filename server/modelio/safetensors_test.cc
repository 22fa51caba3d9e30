#include "server/modelio/safetensors.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "server/modelio/safetensors_writer.h"
#include "server/modelio/test_util.h"

namespace kvwire::modelio {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr Dtype kAllDtypes[] = {Dtype::kBool, Dtype::kU8,   Dtype::kI8,   Dtype::kF8E4M3,
                                Dtype::kF8E5M2, Dtype::kI16, Dtype::kU16, Dtype::kF16,
                                Dtype::kBF16, Dtype::kI32,  Dtype::kU32,  Dtype::kF32,
                                Dtype::kF64,  Dtype::kI64,  Dtype::kU64};

fs::path TestDir() { return test::FreshTestDir(); }

std::vector<uint8_t> PatternBytes(size_t n, uint8_t salt) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 131 + salt * 7 + 1);
  return v;
}

// A raw safetensors file: little-endian length, header text as given, data bytes.
std::string RawFile(std::string_view header, std::string_view data = {},
                    std::optional<uint64_t> length_override = std::nullopt) {
  const uint64_t len = length_override.value_or(header.size());
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(len >> (8 * i));
  out.append(header);
  out.append(data);
  return out;
}

void WriteBytes(const fs::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string ReadBytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Opens raw bytes as a file and returns the error (fails the test if it parses).
absl::Status OpenError(std::string_view bytes) {
  const fs::path path = TestDir() / "bad.safetensors";
  WriteBytes(path, bytes);
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path.string());
  EXPECT_FALSE(file.ok()) << "opened a malformed file";
  if (file.ok()) return absl::OkStatus();
  // Every message must say which file it is about.
  EXPECT_THAT(std::string(file.status().message()), HasSubstr(path.string()));
  return file.status();
}

void ExpectMalformed(std::string_view bytes, std::string_view fragment) {
  const absl::Status st = OpenError(bytes);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_THAT(std::string(st.message()), HasSubstr(std::string(fragment)));
  // The in-memory entry point must agree with the file one.
  EXPECT_FALSE(ParseSafetensors({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()},
                                "mem")
                   .ok());
}

TEST(SafetensorsTest, RoundTripsEveryDtype) {
  const fs::path path = TestDir() / "all.safetensors";
  std::vector<std::vector<uint8_t>> storage;
  std::vector<TensorToWrite> tensors;
  for (Dtype dtype : kAllDtypes) {
    const std::vector<int64_t> shape = {3, 5};
    storage.push_back(PatternBytes(15 * DtypeSize(dtype), static_cast<uint8_t>(dtype)));
    tensors.push_back({"t." + std::string(DtypeName(dtype)), dtype, shape, storage.back()});
  }
  // Corner shapes: a scalar and an empty tensor.
  storage.push_back(PatternBytes(4, 99));
  tensors.push_back({"scalar", Dtype::kF32, {}, storage.back()});
  tensors.push_back({"empty", Dtype::kBF16, {0, 7}, {}});
  ASSERT_TRUE(WriteSafetensors(path.string(), tensors, {{"format", "pt"}, {"note", "x"}}).ok());

  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path.string());
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->size(), tensors.size());
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  EXPECT_EQ((*file)->metadata().at("note"), "x");
  for (const TensorToWrite& t : tensors) {
    absl::StatusOr<TensorView> view = (*file)->Get(t.name);
    ASSERT_TRUE(view.ok()) << view.status();
    EXPECT_EQ(view->name, t.name);
    EXPECT_EQ(view->dtype, t.dtype) << t.name;
    EXPECT_EQ(view->shape, t.shape) << t.name;
    ASSERT_EQ(view->nbytes, t.data.size()) << t.name;
    EXPECT_TRUE(t.data.empty() || std::memcmp(view->data, t.data.data(), t.data.size()) == 0)
        << t.name;
  }
  EXPECT_EQ((*file)->Get("scalar")->numel(), 1);
  EXPECT_EQ((*file)->Get("empty")->numel(), 0);

  // Format details the reference implementation relies on: header padded with spaces to a
  // multiple of 8, so the data section is 8-byte aligned, and the header is plain JSON.
  const std::string raw = ReadBytes(path);
  uint64_t header_len = 0;
  std::memcpy(&header_len, raw.data(), 8);
  EXPECT_EQ(header_len % 8, 0u);
  const std::string header = raw.substr(8, header_len);
  EXPECT_EQ(header.front(), '{');
  EXPECT_TRUE(nlohmann::json::accept(header));
  EXPECT_EQ(header.find_last_not_of(' '), header.rfind('}'));
  // Tensors are stored in the given order.
  EXPECT_EQ(raw.substr(8 + header_len, tensors[0].data.size()),
            std::string(tensors[0].data.begin(), tensors[0].data.end()));
}

TEST(SafetensorsTest, StreamingWriterAndNames) {
  const fs::path path = TestDir() / "stream.safetensors";
  const std::vector<TensorSpec> specs = {{"b", Dtype::kI32, {4}}, {"a", Dtype::kU8, {2, 2}}};
  ASSERT_TRUE(WriteSafetensors(path.string(), specs,
                               [](size_t index, std::span<uint8_t> out) {
                                 for (uint8_t& byte : out) byte = static_cast<uint8_t>(index + 1);
                                 return absl::OkStatus();
                               })
                  .ok());
  auto file = SafetensorsFile::Open(path.string());
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_THAT((*file)->Names(), ElementsAre("a", "b"));
  EXPECT_TRUE((*file)->metadata().empty());
  EXPECT_EQ((*file)->Get("b")->data[15], 1);
  EXPECT_EQ((*file)->Get("a")->data[0], 2);
  EXPECT_TRUE((*file)->Has("a"));
  EXPECT_FALSE((*file)->Has("c"));
  absl::StatusOr<TensorView> missing = (*file)->Get("c");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("'c'"));

  // A failing filler aborts the write and leaves no file behind.
  const fs::path failed = TestDir() / "failed.safetensors";
  absl::Status st = WriteSafetensors(failed.string(), specs, [](size_t, std::span<uint8_t>) {
    return absl::InternalError("boom");
  });
  EXPECT_THAT(std::string(st.message()), HasSubstr("boom"));
  EXPECT_FALSE(fs::exists(failed));
  EXPECT_FALSE(fs::exists(failed.string() + ".tmp"));
}

TEST(SafetensorsTest, WriterRejectsBadInput) {
  const std::string path = (TestDir() / "x.safetensors").string();
  const std::vector<uint8_t> four(4);
  auto write = [&](std::vector<TensorToWrite> t) { return WriteSafetensors(path, t); };
  EXPECT_THAT(std::string(write({{"a", Dtype::kF32, {1}, four}, {"a", Dtype::kF32, {1}, four}})
                              .message()),
              HasSubstr("duplicate tensor name 'a'"));
  EXPECT_THAT(std::string(write({{"a", Dtype::kF32, {2}, four}}).message()),
              HasSubstr("4 bytes given but F32 [2] needs 8"));
  EXPECT_THAT(std::string(write({{"a", Dtype::kF32, {-1}, four}}).message()),
              HasSubstr("negative dimension"));
  EXPECT_THAT(std::string(write({{"a", Dtype::kF32, {1ll << 40, 1ll << 40}, four}}).message()),
              HasSubstr("overflows"));
  EXPECT_FALSE(write({{"", Dtype::kF32, {1}, four}}).ok());
  EXPECT_FALSE(write({{"__metadata__", Dtype::kF32, {1}, four}}).ok());
  EXPECT_THAT(std::string(write({{"bad\xff", Dtype::kF32, {1}, four}}).message()),
              HasSubstr("UTF-8"));
  EXPECT_FALSE(fs::exists(path));
}

// ---- Malformed files: each must be a clear InvalidArgument, never a crash. ----

constexpr char kGoodHeader[] = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
const std::string kEightBytes(8, '\x01');

TEST(SafetensorsMalformedTest, SanityCheckOfTheGoodCase) {
  const fs::path path = TestDir() / "good.safetensors";
  WriteBytes(path, RawFile(kGoodHeader, kEightBytes));
  EXPECT_TRUE(SafetensorsFile::Open(path.string()).ok());
}

TEST(SafetensorsMalformedTest, TooShortOrEmpty) {
  ExpectMalformed("", "too short");
  ExpectMalformed("\x10\x00\x00", "too short");
}

TEST(SafetensorsMalformedTest, TruncatedFile) {
  const std::string whole = RawFile(kGoodHeader, kEightBytes);
  // Cut inside the data section: the tensor now runs past the end.
  ExpectMalformed(whole.substr(0, whole.size() - 3), "extend past the data section");
  // Cut inside the header: the declared header length runs past the end.
  ExpectMalformed(whole.substr(0, 20), "runs past the end");
}

TEST(SafetensorsMalformedTest, HeaderLength) {
  ExpectMalformed(RawFile(kGoodHeader, kEightBytes, 1000), "runs past the end");
  ExpectMalformed(RawFile(kGoodHeader, kEightBytes, uint64_t{1} << 40), "exceeds the limit");
  ExpectMalformed(RawFile(kGoodHeader, kEightBytes, ~uint64_t{0}), "exceeds the limit");
  ExpectMalformed(RawFile("", kEightBytes), "does not start with '{'");
}

TEST(SafetensorsMalformedTest, HeaderNotJson) {
  ExpectMalformed(RawFile("{not json at all}"), "not valid JSON");
  ExpectMalformed(RawFile(R"({"a":{"dtype":"F32")"), "not valid JSON");
  ExpectMalformed(RawFile("[1,2]"), "does not start with '{'");
  ExpectMalformed(RawFile("\x89PNG...."), "does not start with '{'");
  ExpectMalformed(RawFile(R"({"a": 5})"), "entry must be an object");
}

TEST(SafetensorsMalformedTest, DeeplyNestedHeaderDoesNotOverflowTheStack) {
  const std::string deep = "{\"a\":" + std::string(500000, '[') + std::string(500000, ']') + "}";
  ExpectMalformed(RawFile(deep), "nests arrays/objects deeper than 128 levels");
  ExpectMalformed(RawFile("{\"a\":" + std::string(500000, '[')), "nests arrays/objects deeper");
  // Regression: a bad shape is quoted in the error through json::dump(), which recursed.
  const std::string shape = std::string(3'000'000, '[') + std::string(3'000'000, ']');
  ExpectMalformed(RawFile(R"({"a":{"dtype":"F32","shape":)" + shape + R"(,"data_offsets":[0,0]}})"),
                  "nests arrays/objects deeper");
  ExpectMalformed(RawFile(R"({"a":{"dtype":"F32","shape":[[[2]]],"data_offsets":[0,0]}})"), "shape");
  // Brackets inside strings do not count.
  ExpectMalformed(RawFile(R"({"s": ")" + std::string(1000, '[') + R"("})"), "entry must be an object");
}

TEST(SafetensorsMalformedTest, OffsetsOutOfRange) {
  ExpectMalformed(RawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                          kEightBytes),
                  "extend past the data section");
  ExpectMalformed(RawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})",
                          kEightBytes),
                  "end 0 < begin 8");
  ExpectMalformed(RawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})",
                          kEightBytes),
                  "two non-negative integers");
  ExpectMalformed(RawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})",
                          kEightBytes),
                  "two non-negative integers");
  ExpectMalformed(
      RawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,18446744073709551615]}})",
              kEightBytes),
      "extend past the data section");
  ExpectMalformed(
      RawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,99999999999999999999999]}})",
              kEightBytes),
      "two non-negative integers");
}

TEST(SafetensorsMalformedTest, OverlapsGapsAndTrailingBytes) {
  ExpectMalformed(RawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                          R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                          kEightBytes),
                  "overlaps tensor 'a'");
  // Two names for the same bytes.
  ExpectMalformed(RawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                          R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                          kEightBytes),
                  "overlaps");
  ExpectMalformed(RawFile(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                          kEightBytes),
                  "gap of 4 unused bytes before tensor 'a'");
  ExpectMalformed(RawFile(kGoodHeader, kEightBytes + "xx"), "2 trailing bytes");
}

TEST(SafetensorsMalformedTest, SizeMismatch) {
  ExpectMalformed(RawFile(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})",
                          kEightBytes),
                  "holds 8 bytes but F32 [3] needs 12");
  ExpectMalformed(RawFile(R"({"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,8]}})",
                          kEightBytes),
                  "needs 4");
  // Dimensions whose product wraps to 0 in 64 bits must not sneak through.
  ExpectMalformed(RawFile(R"({"a":{"dtype":"U8","shape":[4294967296,4294967296],)"
                          R"("data_offsets":[0,0]}})"),
                  "overflows");
  ExpectMalformed(RawFile(R"({"a":{"dtype":"F64","shape":[2305843009213693952],)"
                          R"("data_offsets":[0,0]}})"),
                  "overflows");
}

TEST(SafetensorsMalformedTest, BadDtypeShapeAndKeys) {
  ExpectMalformed(RawFile(R"({"a":{"dtype":"F128","shape":[2],"data_offsets":[0,8]}})",
                          kEightBytes),
                  "unknown dtype 'F128'");
  ExpectMalformed(RawFile(R"({"a":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}})",
                          kEightBytes),
                  "unknown dtype 'f32'");
  ExpectMalformed(RawFile(R"({"a":{"dtype":7,"shape":[2],"data_offsets":[0,8]}})", kEightBytes),
                  "dtype must be a string");
  ExpectMalformed(RawFile(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})",
                          kEightBytes),
                  "non-negative integers");
  ExpectMalformed(RawFile(R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})",
                          kEightBytes),
                  "non-negative integers");
  ExpectMalformed(RawFile(R"({"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})",
                          kEightBytes),
                  "shape must be a list");
  ExpectMalformed(RawFile(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", kEightBytes),
                  "entry needs");
  ExpectMalformed(RawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})",
                          kEightBytes),
                  "unexpected key 'x'");
  ExpectMalformed(RawFile(R"({"":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                          kEightBytes),
                  "empty tensor name");
  ExpectMalformed(RawFile(R"({"__metadata__":{"format":1},)"
                          R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                          kEightBytes),
                  "must be a string");
  ExpectMalformed(RawFile(R"({"__metadata__":[],)"
                          R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                          kEightBytes),
                  "__metadata__ must be an object");
}

TEST(SafetensorsMalformedTest, NotARegularFileOrMissing) {
  const fs::path dir = TestDir();
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> d = SafetensorsFile::Open(dir.string());
  EXPECT_FALSE(d.ok());
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> m =
      SafetensorsFile::Open((dir / "nope.safetensors").string());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("nope.safetensors"));
}

// Mutating single bytes of a valid file must never crash (a tiny deterministic fuzz run;
// the libFuzzer target goes much further).
TEST(SafetensorsMalformedTest, ByteFlipsNeverCrash) {
  const std::string good = RawFile(
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"I8","shape":[3],"data_offsets":[8,11]}})",
      std::string(11, '\x05'));
  ASSERT_TRUE(ParseSafetensors({reinterpret_cast<const uint8_t*>(good.data()), good.size()}, "m")
                  .ok());
  for (size_t pos = 0; pos < good.size(); ++pos) {
    for (int v : {0, int{'0'}, int{'9'}, int{'['}, int{'}'}, int{'"'}, 0xff}) {
      std::string bytes = good;
      bytes[pos] = static_cast<char>(v);
      absl::StatusOr<SafetensorsHeader> h = ParseSafetensors(
          {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}, "m");
      if (h.ok()) {
        for (const auto& [name, e] : h->tensors) EXPECT_LE(e.file_offset + e.nbytes, bytes.size());
      }
    }
  }
}

// ---- Checkpoint directories ----

struct Owned {
  std::vector<std::vector<uint8_t>> storage;
  std::vector<TensorToWrite> tensors;
};

// Ten 1 KiB tensors of varied dtype.
Owned SampleTensors() {
  Owned o;
  o.storage.reserve(10);
  for (int i = 0; i < 10; ++i) {
    const Dtype dtype = i % 2 ? Dtype::kBF16 : Dtype::kF32;
    const int64_t n = 1024 / static_cast<int64_t>(DtypeSize(dtype));
    o.storage.push_back(PatternBytes(1024, static_cast<uint8_t>(i)));
    o.tensors.push_back({absl::StrCat("model.layers.", i, ".w"), dtype, {n}, o.storage.back()});
  }
  return o;
}

void ExpectSameTensors(const CheckpointReader& reader, const Owned& o) {
  EXPECT_EQ(reader.Names().size(), o.tensors.size());
  for (const TensorToWrite& t : o.tensors) {
    ASSERT_TRUE(reader.Has(t.name)) << t.name;
    absl::StatusOr<TensorView> v = reader.Get(t.name);
    ASSERT_TRUE(v.ok()) << v.status();
    EXPECT_EQ(v->dtype, t.dtype);
    EXPECT_EQ(v->shape, t.shape);
    ASSERT_EQ(v->nbytes, t.data.size());
    EXPECT_EQ(std::memcmp(v->data, t.data.data(), v->nbytes), 0) << t.name;
  }
}

TEST(CheckpointTest, ShardedRoundTrip) {
  const fs::path dir = TestDir();
  const Owned o = SampleTensors();
  // 2.5 KiB per shard -> two tensors each -> 5 shards.
  ASSERT_TRUE(WriteShardedCheckpoint(dir.string(), o.tensors, 2560).ok());
  EXPECT_FALSE(fs::exists(dir / "model.safetensors"));
  for (int s = 1; s <= 5; ++s) {
    EXPECT_TRUE(fs::exists(dir / absl::StrCat("model-0000", s, "-of-00005.safetensors")));
  }
  const nlohmann::json index =
      nlohmann::json::parse(ReadBytes(dir / "model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"], 10240);
  EXPECT_EQ(index["weight_map"]["model.layers.0.w"], "model-00001-of-00005.safetensors");
  EXPECT_EQ(index["weight_map"]["model.layers.9.w"], "model-00005-of-00005.safetensors");

  absl::StatusOr<std::unique_ptr<CheckpointReader>> reader =
      CheckpointReader::Open(dir.string());
  ASSERT_TRUE(reader.ok()) << reader.status();
  ExpectSameTensors(**reader, o);
  EXPECT_EQ((*reader)->ShardFiles().size(), 5u);

  // transformers rejects safetensors metadata without a known format.
  auto shard = SafetensorsFile::Open((dir / "model-00002-of-00005.safetensors").string());
  ASSERT_TRUE(shard.ok());
  EXPECT_EQ((*shard)->metadata().at("format"), "pt");

  absl::StatusOr<TensorView> missing = (*reader)->Get("lm_head.weight");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("lm_head.weight"));
}

TEST(CheckpointTest, SingleFileWhenItFitsAndOversizedTensorsGetTheirOwnShard) {
  const fs::path dir = TestDir();
  const Owned o = SampleTensors();
  ASSERT_TRUE(WriteShardedCheckpoint(dir.string(), o.tensors, 0).ok());
  EXPECT_TRUE(fs::exists(dir / "model.safetensors"));
  EXPECT_FALSE(fs::exists(dir / "model.safetensors.index.json"));
  auto reader = CheckpointReader::Open(dir.string());
  ASSERT_TRUE(reader.ok()) << reader.status();
  ExpectSameTensors(**reader, o);
  EXPECT_THAT((*reader)->ShardFiles(), ElementsAre("model.safetensors"));

  // Limit below one tensor: one tensor per shard. Rewriting in place must drop the stale
  // single file, which readers would otherwise prefer.
  ASSERT_TRUE(WriteShardedCheckpoint(dir.string(), o.tensors, 100).ok());
  EXPECT_FALSE(fs::exists(dir / "model.safetensors"));
  reader = CheckpointReader::Open(dir.string());
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->ShardFiles().size(), 10u);
  ExpectSameTensors(**reader, o);

  // And back: the stale index goes.
  ASSERT_TRUE(WriteShardedCheckpoint(dir.string(), o.tensors, 1 << 20).ok());
  EXPECT_FALSE(fs::exists(dir / "model.safetensors.index.json"));
}

// Writes a 2-shard checkpoint and then lets a test rewrite its index.
fs::path TwoShardCheckpoint() {
  const fs::path dir = TestDir();
  const Owned o = SampleTensors();
  EXPECT_TRUE(WriteShardedCheckpoint(dir.string(), o.tensors, 5 * 1024).ok());
  EXPECT_TRUE(fs::exists(dir / "model-00002-of-00002.safetensors"));
  return dir;
}

void RewriteIndex(const fs::path& dir, const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json index = nlohmann::json::parse(ReadBytes(dir / "model.safetensors.index.json"));
  edit(index);
  WriteBytes(dir / "model.safetensors.index.json", index.dump());
}

void ExpectOpenError(const fs::path& dir, std::string_view fragment) {
  absl::StatusOr<std::unique_ptr<CheckpointReader>> reader = CheckpointReader::Open(dir.string());
  ASSERT_FALSE(reader.ok());
  EXPECT_THAT(std::string(reader.status().message()), HasSubstr(std::string(fragment)));
}

TEST(CheckpointTest, MissingShard) {
  const fs::path dir = TwoShardCheckpoint();
  fs::remove(dir / "model-00002-of-00002.safetensors");
  absl::StatusOr<std::unique_ptr<CheckpointReader>> reader = CheckpointReader::Open(dir.string());
  ASSERT_FALSE(reader.ok());
  EXPECT_EQ(reader.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(reader.status().message()),
              HasSubstr("shard 'model-00002-of-00002.safetensors'"));
}

TEST(CheckpointTest, TensorMappedToWrongShard) {
  const fs::path dir = TwoShardCheckpoint();
  RewriteIndex(dir, [](nlohmann::json& index) {
    index["weight_map"]["model.layers.0.w"] = "model-00002-of-00002.safetensors";
  });
  ExpectOpenError(dir,
                  "tensor 'model.layers.0.w' is mapped to shard 'model-00002-of-00002.safetensors'"
                  " but that shard does not contain it");
}

TEST(CheckpointTest, ShardTensorMissingFromIndex) {
  const fs::path dir = TwoShardCheckpoint();
  RewriteIndex(dir, [](nlohmann::json& index) { index["weight_map"].erase("model.layers.9.w"); });
  ExpectOpenError(dir, "contains tensor 'model.layers.9.w', which weight_map does not list");
}

TEST(CheckpointTest, MalformedIndex) {
  const fs::path dir = TwoShardCheckpoint();
  RewriteIndex(dir, [](nlohmann::json& index) {
    index["weight_map"]["model.layers.0.w"] = "../model-00001-of-00002.safetensors";
  });
  ExpectOpenError(dir, "not a plain file name");
  RewriteIndex(dir, [](nlohmann::json& index) { index["weight_map"]["model.layers.0.w"] = 3; });
  ExpectOpenError(dir, "must be a file name string");
  RewriteIndex(dir, [](nlohmann::json& index) { index.erase("weight_map"); });
  ExpectOpenError(dir, "'weight_map' must be an object");
  WriteBytes(dir / "model.safetensors.index.json", "{\"weight_map\": {");
  ExpectOpenError(dir, "not valid JSON");
  WriteBytes(dir / "model.safetensors.index.json", "{\"weight_map\": {}}");
  ExpectOpenError(dir, "'weight_map' is empty");
}

TEST(CheckpointTest, CorruptShardIsReportedWithItsName) {
  const fs::path dir = TwoShardCheckpoint();
  const fs::path shard = dir / "model-00001-of-00002.safetensors";
  const std::string bytes = ReadBytes(shard);
  WriteBytes(shard, bytes.substr(0, bytes.size() / 2));
  ExpectOpenError(dir, "model-00001-of-00002.safetensors");
}

TEST(CheckpointTest, EmptyDirectory) {
  absl::StatusOr<std::unique_ptr<CheckpointReader>> reader =
      CheckpointReader::Open(TestDir().string());
  ASSERT_FALSE(reader.ok());
  EXPECT_EQ(reader.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(reader.status().message()), HasSubstr("model.safetensors"));
}

TEST(TensorToFloatTest, ConvertsFloatTypesAndRejectsOthers) {
  const fs::path path = TestDir() / "f.safetensors";
  const float f32[3] = {1.5f, -2.0f, 0.25f};
  const uint16_t bf16[3] = {FloatToBF16(1.5f), FloatToBF16(-2.0f), FloatToBF16(0.25f)};
  const uint16_t f16[3] = {FloatToHalf(1.5f), FloatToHalf(-2.0f), FloatToHalf(0.25f)};
  const double f64[3] = {1.5, -2.0, 0.25};
  const int32_t i32[3] = {1, 2, 3};
  auto bytes = [](const void* p, size_t n) {
    return std::span<const uint8_t>(static_cast<const uint8_t*>(p), n);
  };
  // The 2-byte tensors first, so the F32 one sits at an odd multiple of 2 - TensorToFloat
  // must not assume alignment.
  const std::vector<TensorToWrite> tensors = {
      {"bf16", Dtype::kBF16, {3}, bytes(bf16, 6)}, {"f32", Dtype::kF32, {3}, bytes(f32, 12)},
      {"f16", Dtype::kF16, {3}, bytes(f16, 6)},    {"f64", Dtype::kF64, {3}, bytes(f64, 24)},
      {"i32", Dtype::kI32, {3}, bytes(i32, 12)}};
  ASSERT_TRUE(WriteSafetensors(path.string(), tensors).ok());
  auto file = SafetensorsFile::Open(path.string());
  ASSERT_TRUE(file.ok());
  for (const char* name : {"bf16", "f32", "f16", "f64"}) {
    absl::StatusOr<std::vector<float>> v = TensorToFloat(*(*file)->Get(name));
    ASSERT_TRUE(v.ok()) << v.status();
    EXPECT_THAT(*v, ElementsAre(1.5f, -2.0f, 0.25f)) << name;
  }
  absl::StatusOr<std::vector<float>> i = TensorToFloat(*(*file)->Get("i32"));
  EXPECT_THAT(std::string(i.status().message()), HasSubstr("'i32' has dtype I32"));
}

}  // namespace
}  // namespace kvwire::modelio
