// Property: whatever cache and configuration the input describes, encoding succeeds or is
// rejected up front, and decoding the encoded frame gives back the same kept positions and, for
// raw coding, the same bytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kvcodec/kvcodec.h"

namespace {
const char* kConfigs[] = {
    "plan=*:raw",          "plan=*:raw;entropy=rans",   "plan=*:raw;entropy=zstd/1",
    "plan=*:int8;entropy=rans", "plan=*:int4",          "plan=*:int2/g4;entropy=rans",
    "plan=*:int3/channel", "plan=*:int4;delta=anchor/3", "plan=*:svd2",
};
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 6) return 0;
  kvcodec::CacheShape shape;
  shape.num_layers = 1 + data[0] % 3;
  shape.num_kv_heads = 1 + data[1] % 3;
  shape.head_dim = 4 * (1 + data[2] % 4);
  shape.num_tokens = data[3] % 20;
  shape.dtype = static_cast<kvcodec::DType>(data[4] % 3);
  const char* config_text = kConfigs[data[5] % (sizeof(kConfigs) / sizeof(kConfigs[0]))];
  data += 6;
  size -= 6;
  const size_t layer_bytes = static_cast<size_t>(shape.num_kv_heads) * shape.num_tokens * shape.head_dim *
                             kvcodec::DTypeSize(shape.dtype);
  std::vector<std::vector<uint8_t>> k(shape.num_layers), v(shape.num_layers);
  std::vector<kvcodec::LayerView> views;
  size_t at = 0;
  for (int l = 0; l < shape.num_layers; ++l) {
    k[l].resize(layer_bytes);
    v[l].resize(layer_bytes);
    for (size_t i = 0; i < layer_bytes; ++i, ++at) {
      k[l][i] = size ? data[at % size] : 0;
      v[l][i] = size ? data[(at * 7 + 3) % size] : 0;
    }
    views.push_back({k[l].data(), v[l].data()});
  }
  kvcodec::Selection sel = kvcodec::Selection::KeepAll(shape);
  for (int l = 0; l < shape.num_layers; ++l) {
    for (int h = 0; h < shape.num_kv_heads; ++h) {
      auto& list = sel.kept[l][h];
      std::vector<int32_t> keep;
      for (int32_t t : list) {
        if (!size || (data[(t + l * 31 + h * 7) % size] & 1)) keep.push_back(t);
      }
      list = keep;
    }
  }
  std::vector<int32_t> positions(shape.num_tokens);
  for (int t = 0; t < shape.num_tokens; ++t) positions[t] = t;
  auto config = kvcodec::CodecConfig::Parse(config_text);
  auto frame = kvcodec::EncodeFrame(shape, *config, "fuzz", positions, views, sel);
  if (!frame.ok()) return 0;  // e.g. non-finite values under an integer coding: rejected up front
  auto decoded = kvcodec::DecodeFrame(*frame, {}, "fuzz");
  if (!decoded.ok()) std::abort();
  const bool raw = std::strcmp(config_text, "plan=*:raw") == 0;
  for (const auto& layer : *decoded) {
    if (layer.kept != sel.kept[layer.layer]) std::abort();
    if (!raw) continue;
    for (int h = 0; h < shape.num_kv_heads; ++h) {
      const size_t row = shape.head_dim * kvcodec::DTypeSize(shape.dtype);
      for (size_t i = 0; i < layer.kept[h].size(); ++i) {
        const size_t src = (static_cast<size_t>(h) * shape.num_tokens + layer.kept[h][i]) * row;
        if (std::memcmp(layer.keys[h].data() + i * row, k[layer.layer].data() + src, row) != 0) std::abort();
      }
    }
  }
  return 0;
}
