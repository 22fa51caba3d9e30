// Writes the golden corpus of malformed frames (tests/corpus/bad_frames/) that every decoder
// version must reject. Each file is a valid frame with one defect; where the defect sits behind
// a checksum, the checksums are recomputed so that the decoder's later checks are what trip.
// Usage: make_bad_frames OUT_DIR   (writes *.bin and MANIFEST.tsv: file, status code, message)
#include <xxhash.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "kvcodec/kvcodec.h"
#include "kvcodec/synthetic.h"

namespace {
using Bytes = std::vector<uint8_t>;
using kvcodec::CodecConfig;

uint32_t U32(const Bytes& b, size_t at) {
  return b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (uint32_t(b[at + 3]) << 24);
}
void PutU32(Bytes& b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = uint8_t(v >> (8 * i));
}
void PutU64(Bytes& b, size_t at, uint64_t v) {
  for (int i = 0; i < 8; ++i) b[at + i] = uint8_t(v >> (8 * i));
}

struct Layout {
  size_t header_end;                 // offset after header hash
  std::vector<size_t> chunk_starts;  // offset of each chunk's magic
  size_t trailer;                    // offset of the trailer
};

Layout Parse(const Bytes& f) {
  Layout l;
  l.header_end = 10 + U32(f, 6) + 8;
  size_t at = l.header_end;
  while (std::memcmp(&f[at], "KVWC", 4) == 0) {
    l.chunk_starts.push_back(at);
    at += 12 + U32(f, at + 8) + 8;
  }
  l.trailer = at;
  return l;
}

// Recomputes every hash and the trailer's byte count after an edit.
void Rehash(Bytes& f) {
  const Layout l = Parse(f);
  const size_t body_end = l.header_end - 8;
  const uint64_t hh = XXH3_64bits(f.data(), body_end);
  PutU64(f, body_end, hh);
  Bytes chained;
  for (size_t start : l.chunk_starts) {
    const size_t end = start + 12 + U32(f, start + 8);
    const uint64_t ch = XXH3_64bits_withSeed(&f[start], end - start, hh);
    PutU64(f, end, ch);
    for (int i = 0; i < 8; ++i) chained.push_back(uint8_t(ch >> (8 * i)));
  }
  PutU32(f, l.trailer + 4, uint32_t(l.chunk_starts.size()));
  PutU64(f, l.trailer + 8, l.trailer);
  chained.insert(chained.end(), f.begin() + l.trailer, f.begin() + l.trailer + 16);
  PutU64(f, l.trailer + 16, XXH3_64bits_withSeed(chained.data(), chained.size(), hh));
}

Bytes Encode(const std::string& config_text, const std::string& fingerprint, uint64_t seed) {
  const kvcodec::CacheShape shape{3, 2, 32, 40, kvcodec::DType::kBFloat16};
  const auto cache = kvcodec::MakeSyntheticCache(shape, seed);
  auto config = CodecConfig::Parse(config_text);
  auto frame = kvcodec::EncodeFrame(shape, *config, fingerprint, cache.positions, cache.views(),
                                    kvcodec::Selection::KeepAll(shape));
  if (!frame.ok()) {
    std::fprintf(stderr, "encode failed: %s\n", std::string(frame.status().message()).c_str());
    std::exit(1);
  }
  return *frame;
}

// Replaces `from` with `to` (same length) in the header's config text.
void EditConfig(Bytes& f, const std::string& from, const std::string& to) {
  const Layout l = Parse(f);
  auto it = std::search(f.begin(), f.begin() + l.header_end, from.begin(), from.end());
  if (it == f.begin() + l.header_end || from.size() != to.size()) std::exit(2);
  std::copy(to.begin(), to.end(), it);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  const std::string fp = "kvwire-test-model";
  const Bytes good = Encode("plan=*:int8;entropy=rans", fp, 1);
  const Layout l = Parse(good);
  std::ofstream manifest(dir + "/MANIFEST.tsv");
  manifest << "# file\tstatus\tmessage substring (decoded with expected fingerprint " << fp << ")\n";
  auto emit = [&](const std::string& name, const Bytes& b, const char* code, const char* msg) {
    std::ofstream(dir + "/" + name + ".bin", std::ios::binary)
        .write(reinterpret_cast<const char*>(b.data()), b.size());
    manifest << name << ".bin\t" << code << "\t" << msg << "\n";
  };
  Bytes b;
  emit("empty", {}, "DATA_LOSS", "header never arrived");
  b = good; b[0] = 'X'; emit("bad_magic", b, "DATA_LOSS", "bad magic");
  b = good; b[4] = 2; emit("future_version", b, "DATA_LOSS", "unsupported frame version");
  b = good; b[5] = 1; emit("nonzero_flags", b, "DATA_LOSS", "flags");
  b = good; b[12] ^= 0x40; emit("header_bit_flip", b, "DATA_LOSS", "header checksum");
  b = good; PutU32(b, 6, 0xffffffffu); emit("header_len_huge", b, "DATA_LOSS", "header too large");
  b = Bytes(good.begin(), good.begin() + 20); emit("truncated_header", b, "DATA_LOSS", "header never arrived");
  // Header fields: dtype at 10, then varints layers(3) heads(2) dim(32) tokens(40).
  b = good; b[11] = 0xff; b.insert(b.begin() + 12, {0xff, 0x7f}); PutU32(b, 6, U32(good, 6) + 2);
  Rehash(b); emit("absurd_layers", b, "RESOURCE_EXHAUSTED", "beyond limits");
  b = good; b[10] = 7; Rehash(b); emit("unknown_dtype", b, "DATA_LOSS", "dtype");
  b = good; EditConfig(b, "select=keepall", "select=magic!"  " "); Rehash(b);
  emit("bad_config", b, "DATA_LOSS", "bad config");
  b = good; EditConfig(b, "*:int8", "*:int4"); Rehash(b);
  emit("section_disagrees_with_plan", b, "DATA_LOSS", "inconsistent section");
  b = Encode("plan=*:int8;entropy=rans", "another-model", 1);
  emit("wrong_fingerprint", b, "FAILED_PRECONDITION", "fingerprint mismatch");
  b = good; b[l.chunk_starts[1] + 40] ^= 1; emit("chunk_bit_flip", b, "DATA_LOSS", "checksum mismatch");
  b = good; PutU32(b, l.chunk_starts[0] + 8, 0x7fffffffu);
  emit("chunk_len_huge", b, "RESOURCE_EXHAUSTED", "beyond the limit");
  b = good; b[l.chunk_starts[0]] = 'Q'; emit("bad_chunk_magic", b, "DATA_LOSS", "bad chunk magic");
  {
    Bytes c0(good.begin() + l.chunk_starts[0], good.begin() + l.chunk_starts[1]);
    Bytes c1(good.begin() + l.chunk_starts[1], good.begin() + l.chunk_starts[2]);
    b = Bytes(good.begin(), good.begin() + l.chunk_starts[0]);
    Bytes dup = b; dup.insert(dup.end(), c0.begin(), c0.end()); dup.insert(dup.end(), c0.begin(), c0.end());
    emit("duplicate_chunk", dup, "DATA_LOSS", "duplicate chunk");
    Bytes reord = b; reord.insert(reord.end(), c1.begin(), c1.end());
    emit("reordered_chunk", reord, "DATA_LOSS", "missing or reordered");
    Bytes missing = b; missing.insert(missing.end(), c0.begin(), c0.end()); missing.insert(missing.end(), c1.begin(), c1.end());
    missing.insert(missing.end(), good.begin() + l.trailer, good.end());
    emit("missing_chunk", missing, "DATA_LOSS", "missing chunks");
  }
  {
    // Chunk 1 from a frame of another cache, same config: intact bytes, wrong frame.
    const Bytes other = Encode("plan=*:int8;entropy=rans", fp, 2);
    const Layout lo = Parse(other);
    b = Bytes(good.begin(), good.begin() + l.chunk_starts[1]);
    b.insert(b.end(), other.begin() + lo.chunk_starts[1], other.begin() + lo.chunk_starts[2]);
    b.insert(b.end(), good.begin() + l.chunk_starts[2], good.end());
    emit("spliced_chunk", b, "DATA_LOSS", "checksum mismatch");
  }
  b = Bytes(good.begin(), good.begin() + l.chunk_starts[1] + 30);
  emit("truncated_mid_chunk", b, "DATA_LOSS", "truncated frame");
  b = Bytes(good.begin(), good.begin() + l.trailer); emit("no_trailer", b, "DATA_LOSS", "no trailer");
  b = good; b.push_back(0); emit("trailing_garbage", b, "DATA_LOSS", "after the end");
  b = good; b[b.size() - 1] ^= 0x80; emit("trailer_bit_flip", b, "DATA_LOSS", "trailer checksum");
  std::printf("wrote corpus to %s\n", dir.c_str());
  return 0;
}
