// One shadow pass: how far the compressed cache a decode node generated from moved the model
// from what the full cache would have produced, on a live request (issue 9, online part).
//
// The full cache is recomputed on the decode node from the prompt's token ids (the prefill node
// sends them in UploadHeader.shadow for the requests it samples). Both caches then go through
// the same DecodeSession code: the suffix tokens are stepped, and the first N generated tokens
// are teacher-forced, the tokens the user actually got (not the full cache's own greedy ones),
// so the measure describes the answer that was served and needs only one pass per cache. At
// each step the two next-token distributions are compared with client/eval's fidelity
// arithmetic: top-1 agreement and KL(full || compressed). A lossless codec gives agreement 1 and
// KL exactly 0 when both nodes run the same model build and engine settings (the prefill is
// then bit for bit the prefill node's).
//
// Reconstruction error: kvcodec does not report one (its encoder never looks at what the
// decoder will rebuild, and adding that would cost a decode per frame), so the pass computes it
// here, where the full cache exists anyway: ||x' - x|| / ||x|| over the kept rows of all layers
// and heads, keys and values apart (the offline harness's K/V error, pooled over layers).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/eval/fidelity_math.h"
#include "kvcodec/kvcodec.h"
#include "server/engine/engine.h"

namespace kvwire::shadow {

// Everything a pass needs, taken from a request the decode node has answered.
struct ShadowInput {
  std::string request_id;
  // The preset name the prefill node sent (labels are bounded by ShadowRunner).
  std::string preset;
  // The compressed cache as the decode node rebuilt it: the frame's shape, its tokens' original
  // positions (kvcodec::FrameInfo::positions) and its decoded layers.
  kvcodec::CacheShape shape;
  std::vector<int32_t> positions;
  std::vector<kvcodec::DecodedLayer> layers;
  // UploadHeader.prompt_tokens and the ids of those tokens (UploadHeader.shadow).
  int prompt_tokens = 0;
  std::vector<int32_t> prompt_token_ids;
  // UploadHeader.suffix_token_ids.
  std::vector<int32_t> suffix_token_ids;
  // The tokens generated for the user, in order (at least the first N of them).
  std::vector<int32_t> generated;
};

struct ShadowMeasures {
  // steps = min(N, generated tokens); agreement() and mean_kl() are the pass's figures.
  eval::FidelitySums fidelity;
  eval::ErrorSums keys;
  eval::ErrorSums values;
};

// Runs the pass for the first `max_steps` (>= 1) generated tokens. InvalidArgument when the
// input is inconsistent (ids that do not match prompt_tokens, no suffix or no generated token,
// layers or positions that do not fit the shape or the model); engine errors as they come.
absl::StatusOr<ShadowMeasures> MeasureShadow(const engine::Engine& engine, const ShadowInput& input,
                                             int max_steps);

}  // namespace kvwire::shadow
