#include "server/shadow/shadow_pass.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kvcodec/dtype.h"

namespace kvwire::shadow {
namespace {

absl::Status CheckInput(const engine::Engine& engine, const ShadowInput& in, int max_steps) {
  if (max_steps < 1) return absl::InvalidArgumentError(absl::StrCat("max_steps must be >= 1, got ", max_steps));
  if (in.prompt_tokens < 1 || static_cast<int64_t>(in.prompt_token_ids.size()) != in.prompt_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("shadow prompt ids: ", in.prompt_token_ids.size(), " ids for a cache of ",
                     in.prompt_tokens, " prompt tokens"));
  }
  if (in.suffix_token_ids.empty()) return absl::InvalidArgumentError("no suffix tokens to step");
  if (in.generated.empty()) return absl::InvalidArgumentError("no generated tokens to compare");
  const modelio::ModelConfig& cfg = engine.config();
  const kvcodec::CacheShape& s = in.shape;
  if (s.num_layers != cfg.num_hidden_layers || s.num_kv_heads != cfg.num_key_value_heads ||
      static_cast<int>(in.layers.size()) != s.num_layers ||
      static_cast<int>(in.positions.size()) != s.num_tokens) {
    return absl::InvalidArgumentError("the compressed cache's shape does not fit the model");
  }
  for (int l = 0; l < s.num_layers; ++l) {
    const kvcodec::DecodedLayer& layer = in.layers[l];
    if (static_cast<int>(layer.kept.size()) != s.num_kv_heads ||
        static_cast<int>(layer.keys.size()) != s.num_kv_heads ||
        static_cast<int>(layer.values.size()) != s.num_kv_heads) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", l, " does not have one entry per KV head"));
    }
    const size_t row = static_cast<size_t>(s.head_dim) * kvcodec::DTypeSize(s.dtype);
    for (int h = 0; h < s.num_kv_heads; ++h) {
      for (int32_t t : layer.kept[h]) {
        if (t < 0 || t >= s.num_tokens || in.positions[t] < 0 || in.positions[t] >= in.prompt_tokens) {
          return absl::InvalidArgumentError(absl::StrCat("layer ", l, " keeps a token outside the prompt"));
        }
      }
      if (layer.keys[h].size() != layer.kept[h].size() * row ||
          layer.values[h].size() != layer.kept[h].size() * row) {
        return absl::InvalidArgumentError(absl::StrCat("layer ", l, " buffers do not match its rows"));
      }
    }
  }
  return absl::OkStatus();
}

// Relative error of the kept rows against the same rows of the full cache, keys and values.
void AddReconstructionError(const ShadowInput& in, const engine::PrefillResult& full,
                            ShadowMeasures& out) {
  const int D = in.shape.head_dim;
  const int T = full.shape.num_tokens;
  std::vector<float> ref, got;
  for (int l = 0; l < in.shape.num_layers; ++l) {
    const kvcodec::DecodedLayer& layer = in.layers[l];
    for (int h = 0; h < in.shape.num_kv_heads; ++h) {
      const size_t n = layer.kept[h].size() * static_cast<size_t>(D);
      for (int which = 0; which < 2; ++which) {
        const std::vector<uint8_t>& full_layer = which == 0 ? full.keys[l] : full.values[l];
        const kvcodec::ByteBuffer& rebuilt = which == 0 ? layer.keys[h] : layer.values[h];
        ref.resize(n);
        got.resize(n);
        kvcodec::ToFloat(rebuilt.data(), in.shape.dtype, n, got.data());
        const size_t full_row = static_cast<size_t>(D) * kvcodec::DTypeSize(full.shape.dtype);
        for (size_t i = 0; i < layer.kept[h].size(); ++i) {
          const int64_t p = in.positions[layer.kept[h][i]];
          const uint8_t* src = full_layer.data() + (static_cast<size_t>(h) * T + p) * full_row;
          kvcodec::ToFloat(src, full.shape.dtype, D, ref.data() + i * D);
        }
        (which == 0 ? out.keys : out.values).Add(ref, got);
      }
    }
  }
}

}  // namespace

absl::StatusOr<ShadowMeasures> MeasureShadow(const engine::Engine& engine, const ShadowInput& in,
                                             int max_steps) {
  if (absl::Status s = CheckInput(engine, in, max_steps); !s.ok()) return s;
  ShadowMeasures out;

  // The full cache, recomputed from the prompt's ids exactly as the prefill node computed it.
  auto full = engine.Prefill(in.prompt_token_ids);
  if (!full.ok()) return full.status();
  if (full->shape.head_dim != in.shape.head_dim) {
    return absl::InvalidArgumentError("the compressed cache's head size does not fit the model");
  }
  AddReconstructionError(in, *full, out);
  auto reference = engine::DecodeSession::FromPrefill(engine, *full);
  if (!reference.ok()) return reference.status();
  full->keys.clear();  // the session holds its own copy
  full->values.clear();
  auto candidate =
      engine::DecodeSession::Create(engine, in.shape, in.layers, in.prompt_tokens, in.positions);
  if (!candidate.ok()) return candidate.status();

  // Both caches step the suffix, then the tokens the user got, side by side.
  absl::StatusOr<std::vector<float>> ref_logits, cand_logits;
  for (int32_t id : in.suffix_token_ids) {
    ref_logits = (*reference)->Step(id);
    if (!ref_logits.ok()) return ref_logits.status();
    cand_logits = (*candidate)->Step(id);
    if (!cand_logits.ok()) return cand_logits.status();
  }
  const int steps = std::min<int64_t>(max_steps, in.generated.size());
  for (int i = 0; i < steps; ++i) {
    out.fidelity.AddStep(*ref_logits, *cand_logits);
    if (i + 1 == steps) break;
    ref_logits = (*reference)->Step(in.generated[i]);
    if (!ref_logits.ok()) return ref_logits.status();
    cand_logits = (*candidate)->Step(in.generated[i]);
    if (!cand_logits.ok()) return cand_logits.status();
  }
  return out;
}

}  // namespace kvwire::shadow
