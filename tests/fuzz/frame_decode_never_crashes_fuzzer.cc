// Property: any byte string, split anywhere, is either rejected with a status or decodes to layers
// whose sizes agree with the verified header. Never a crash, an out-of-bounds access (ASan), or
// an allocation beyond the limits.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "kvcodec/kvcodec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kvcodec::DecodeLimits limits;
  limits.max_decoded_bytes = 64 << 20;  // keep each run cheap; the checks are the same
  limits.max_chunk_bytes = 16 << 20;
  kvcodec::FrameDecoder decoder(limits, "");
  const size_t split = size ? data[0] % (size + 1) : 0;
  bool ok = decoder.Feed({data, split}).ok() && decoder.Feed({data + split, size - split}).ok();
  for (const kvcodec::DecodedLayer& layer : decoder.TakeLayers()) {
    const kvcodec::FrameInfo* info = decoder.info();
    if (info == nullptr) std::abort();
    const auto& s = info->shape;
    if (layer.kept.size() != static_cast<size_t>(s.num_kv_heads)) std::abort();
    for (int h = 0; h < s.num_kv_heads; ++h) {
      const size_t expect = layer.kept[h].size() * s.head_dim * kvcodec::DTypeSize(s.dtype);
      if (layer.keys[h].size() != expect || layer.values[h].size() != expect) std::abort();
      for (size_t i = 0; i < layer.kept[h].size(); ++i) {
        if (layer.kept[h][i] >= s.num_tokens || (i && layer.kept[h][i] <= layer.kept[h][i - 1])) std::abort();
      }
    }
  }
  if (ok) (void)decoder.Finish();
  return 0;
}
