#include "kernels/gpu_frame_check.h"

#include <xxhash.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/gpu_frame.h"
#include "kernels/section_codec.h"
#include "kvcodec/frame_common.h"

namespace kvwire::gpu::testing {
namespace {

using ::testing::AssertionFailure;
using ::testing::AssertionResult;
using ::testing::AssertionSuccess;

struct DeviceCache {
  std::vector<Buffer> buffers;
  std::vector<DeviceLayerView> views;
};

absl::StatusOr<DeviceCache> UploadCache(Backend& backend, const kvcodec::SyntheticCache& cache) {
  DeviceCache d;
  for (size_t l = 0; l < cache.keys.size(); ++l) {
    for (const auto* host : {&cache.keys[l], &cache.values[l]}) {
      auto b = Upload(backend, *host);
      if (!b.ok()) return b.status();
      d.buffers.push_back(*std::move(b));
    }
    d.views.push_back({d.buffers[2 * l].data(), d.buffers[2 * l + 1].data()});
  }
  return d;
}

std::string Describe(const absl::Status& s) { return s.ok() ? "OK" : s.ToString(); }

// Every kept row of `got` (either layout) equals kvcodec's decoded row; other rows are zero.
AssertionResult SameLayers(Backend& backend, const kvcodec::CacheShape& shape,
                           const std::vector<kvcodec::DecodedLayer>& expected,
                           const std::vector<DeviceDecodedLayer>& got, bool at_token_index) {
  if (expected.size() != got.size()) {
    return AssertionFailure() << got.size() << " layers, kvcodec has " << expected.size();
  }
  const size_t row = static_cast<size_t>(shape.head_dim) * kvcodec::DTypeSize(shape.dtype);
  for (size_t l = 0; l < got.size(); ++l) {
    const auto& e = expected[l];
    const auto& g = got[l];
    if (e.layer != g.layer || e.kept != g.kept) return AssertionFailure() << "layer " << l << ": selection differs";
    for (int which = 0; which < 2; ++which) {
      const Buffer& buffer = which ? g.values : g.keys;
      std::vector<uint8_t> host(static_cast<size_t>(shape.num_kv_heads) * g.capacity * row);
      if (absl::Status s = backend.CopyToHost(host.data(), buffer.data(), host.size()); !s.ok()) {
        return AssertionFailure() << s;
      }
      std::vector<bool> written(static_cast<size_t>(shape.num_kv_heads) * g.capacity, false);
      for (int h = 0; h < shape.num_kv_heads; ++h) {
        const auto& rows = which ? e.values[h] : e.keys[h];
        for (size_t i = 0; i < e.kept[h].size(); ++i) {
          const size_t at = static_cast<size_t>(h) * g.capacity + (at_token_index ? e.kept[h][i] : i);
          written[at] = true;
          if (std::memcmp(host.data() + at * row, rows.data() + i * row, row) != 0) {
            return AssertionFailure() << "layer " << g.layer << (which ? " values" : " keys") << " head " << h
                                      << " kept row " << i << " differs from kvcodec";
          }
        }
      }
      for (size_t r = 0; r < written.size(); ++r) {
        if (written[r]) continue;
        for (size_t b = 0; b < row; ++b) {
          if (host[r * row + b] != 0) return AssertionFailure() << "layer " << g.layer << ": unkept row " << r << " written";
        }
      }
    }
  }
  return AssertionSuccess();
}

}  // namespace

std::vector<std::string> FrameConfigs() {
  std::vector<std::string> configs;
  for (const char* preset : {"full", "bf16", "full-zstd", "full-rans", "int8", "int4", "int4-rans", "int4-channel",
                             "int4-kivi", "int3", "int2", "mixed-int4", "cachegen", "svd64", "snapkv25-int4",
                             "h2o25-int4", "streaming25-int4", "pyramid25-int4"}) {
    configs.push_back(kvcodec::Preset(preset)->ToString());
  }
  for (const char* text : {
           "plan=*:fp16;entropy=rans;chunk=2",
           "plan=*:int4/g16;delta=seq;chunk=2",
           "plan=*:int4/channel/g32;delta=gseq/8/open;entropy=zstd",
           "plan=*:int8/channel;delta=seq;entropy=rans",
           "plan=*:int2/channel/g5;delta=anchor/6;entropy=rans",
           "plan=*:int3/channel;delta=seq/open",
           "select=snapkv;keep=0.3;heads=perhead;plan=*k:int2/channel,*v:int8;delta=anchor/5;entropy=rans;chunk=3",
           "select=snapkv;keep=0.4;heads=adaptive;plan=0:svd8,*:int4/g32;entropy=rans",
           "select=random;keep=0.5;plan=*:int4/channel/g8;delta=gseq/3",
       }) {
    configs.push_back(text);
  }
  return configs;
}

AssertionResult FrameMatchesKvcodec(Backend& backend, const kvcodec::CacheShape& shape, const std::string& text,
                                    uint64_t seed) {
  auto config = kvcodec::CodecConfig::Parse(text);
  if (!config.ok()) return AssertionFailure() << config.status();
  const kvcodec::SyntheticCache cache = kvcodec::MakeSyntheticCache(shape, seed);
  const kvcodec::ImportanceScores scores = kvcodec::MakeSyntheticScores(shape, seed);
  auto selection = kvcodec::Select(config->selection, shape, &scores);
  if (!selection.ok()) return AssertionFailure() << selection.status();
  auto expected = kvcodec::EncodeFrame(shape, *config, "model", cache.positions, cache.views(), *selection);
  if (!expected.ok()) return AssertionFailure() << "kvcodec: " << expected.status();
  auto device = UploadCache(backend, cache);
  if (!device.ok()) return AssertionFailure() << device.status();
  auto got = EncodeFrameOn(backend, shape, *config, "model", cache.positions, device->views, *selection);
  if (!got.ok()) return AssertionFailure() << "EncodeFrameOn: " << got.status();
  if (*got != *expected) {
    size_t i = 0;
    while (i < got->size() && i < expected->size() && (*got)[i] == (*expected)[i]) ++i;
    return AssertionFailure() << "frames differ from byte " << i << " (" << got->size() << " vs "
                              << expected->size() << " bytes)";
  }
  auto decoded = kvcodec::DecodeFrame(*expected);
  if (!decoded.ok()) return AssertionFailure() << decoded.status();
  for (bool at_token_index : {false, true}) {
    kvcodec::FrameInfo info;
    auto layers = DecodeFrameOn(backend, *expected, {}, "", &info, {.at_token_index = at_token_index});
    if (!layers.ok()) return AssertionFailure() << "DecodeFrameOn: " << layers.status();
    if (info.config_text != config->ToString()) return AssertionFailure() << "frame info differs";
    if (auto r = SameLayers(backend, shape, *decoded, *layers, at_token_index); !r) return r;
  }
  return AssertionSuccess();
}

AssertionResult DecodeMatchesKvcodec(Backend& backend, std::span<const uint8_t> frame, int* rejected,
                                     std::string_view fingerprint) {
  auto expected = kvcodec::DecodeFrame(frame, {}, fingerprint);
  kvcodec::FrameInfo info;
  auto got = DecodeFrameOn(backend, frame, {}, fingerprint, &info);
  if (expected.ok() != got.ok() ||
      (!got.ok() && (got.status().code() != expected.status().code() ||
                     got.status().message() != expected.status().message()))) {
    return AssertionFailure() << "kvcodec: " << Describe(expected.status()) << "; backend: " << Describe(got.status());
  }
  if (!got.ok()) {
    if (rejected != nullptr) ++*rejected;
    return AssertionSuccess();
  }
  return SameLayers(backend, info.shape, *expected, *got, false);
}

AssertionResult DecodeFailsAsKvcodec(Backend& backend, std::span<const uint8_t> frame, std::string_view fingerprint) {
  int rejected = 0;
  if (auto r = DecodeMatchesKvcodec(backend, frame, &rejected, fingerprint); !r) return r;
  if (rejected == 0) return AssertionFailure() << "the frame was accepted";
  return AssertionSuccess();
}

std::vector<uint8_t> FlipInsideChunk(std::span<const uint8_t> frame, size_t i) {
  return FlipInsideChunks(frame, std::span<const size_t>(&i, 1));
}

std::vector<uint8_t> FlipInsideChunks(std::span<const uint8_t> frame, std::span<const size_t> bytes) {
  if (frame.size() < kvcodec::kHeaderPrefix) return {};
  size_t pos = kvcodec::kHeaderPrefix + kvcodec::LoadU32(frame.data() + 6) + 8;
  if (pos > frame.size()) return {};
  const uint64_t header_hash = kvcodec::LoadU64(frame.data() + pos - 8);
  std::vector<uint8_t> out(frame.begin(), frame.end());
  std::vector<uint64_t> hashes;
  size_t flipped = 0;
  while (pos + kvcodec::kChunkPrefix <= out.size() && kvcodec::MagicIs(std::span(out).subspan(pos), kvcodec::kChunkMagic)) {
    const uint32_t len = kvcodec::LoadU32(out.data() + pos + 8);
    const size_t body = pos + kvcodec::kChunkPrefix;
    if (body + len + 8 > out.size()) return {};
    for (size_t i : bytes) {
      if (i >= body && i < body + len) {
        out[i] ^= 0x5a;
        ++flipped;
      }
    }
    const uint64_t h = XXH3_64bits_withSeed(out.data() + pos, kvcodec::kChunkPrefix + len, header_hash);
    for (int b = 0; b < 8; ++b) out[body + len + b] = static_cast<uint8_t>(h >> (8 * b));
    hashes.push_back(h);
    pos = body + len + 8;
  }
  if (flipped != bytes.size() || pos + kvcodec::kTrailerSize > out.size()) return {};
  std::vector<uint8_t> chained;
  kvcodec::ByteWriter c(&chained);
  for (uint64_t h : hashes) c.U64(h);
  c.Bytes(std::span<const uint8_t>(out.data() + pos, 16));
  const uint64_t t = XXH3_64bits_withSeed(chained.data(), chained.size(), header_hash);
  for (int b = 0; b < 8; ++b) out[pos + 16 + b] = static_cast<uint8_t>(t >> (8 * b));
  return out;
}

AssertionResult EncodeFailsAsKvcodec(Backend& backend, const kvcodec::SyntheticCache& cache,
                                     const kvcodec::CodecConfig& config, const kvcodec::Selection& selection) {
  auto expected = kvcodec::EncodeFrame(cache.shape, config, "m", cache.positions, cache.views(), selection);
  auto device = UploadCache(backend, cache);
  if (!device.ok()) return AssertionFailure() << device.status();
  auto got = EncodeFrameOn(backend, cache.shape, config, "m", cache.positions, device->views, selection);
  if (expected.ok() || got.ok() || got.status() != expected.status()) {
    return AssertionFailure() << "kvcodec: " << Describe(expected.status()) << "; backend: " << Describe(got.status());
  }
  return AssertionSuccess();
}

}  // namespace kvwire::gpu::testing
