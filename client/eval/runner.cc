#include "client/eval/runner.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/eval/fidelity_math.h"
#include "client/eval/scoring.h"
#include "proto/kvwire.pb.h"
#include "server/engine/engine.h"
#include "server/modelio/hf_config.h"
#include "server/nodes/prefill_service.h"
#include "server/scout/token_selection.h"

namespace kvwire::eval {
namespace {

using Clock = std::chrono::steady_clock;
using kvcodec::SelectionMethod;

double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal: renormalise
    exp = 113;
    while (!(mant & 0x400)) {
      mant <<= 1;
      --exp;
    }
    bits = sign | (exp << 23) | ((mant & 0x3ff) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// `n` elements of `dtype` at `src` as floats.
std::vector<float> ToFloat(const uint8_t* src, kvcodec::DType dtype, size_t n) {
  std::vector<float> out(n);
  switch (dtype) {
    case kvcodec::DType::kFloat32:
      std::memcpy(out.data(), src, n * 4);
      break;
    case kvcodec::DType::kBFloat16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        const uint32_t bits = static_cast<uint32_t>(h) << 16;
        std::memcpy(&out[i], &bits, 4);
      }
      break;
    case kvcodec::DType::kFloat16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        out[i] = HalfToFloat(h);
      }
      break;
  }
  return out;
}

// The prefill's cache as decoded layers that keep every position: the reference the codec's
// output is compared with, rebuilt through the same DecodeSession path.
std::vector<kvcodec::DecodedLayer> FullLayers(const engine::PrefillResult& p) {
  const kvcodec::CacheShape& s = p.shape;
  const size_t row = static_cast<size_t>(s.head_dim) * kvcodec::DTypeSize(s.dtype);
  const size_t head_bytes = row * s.num_tokens;
  std::vector<int32_t> all(s.num_tokens);
  for (int t = 0; t < s.num_tokens; ++t) all[t] = t;
  std::vector<kvcodec::DecodedLayer> layers(s.num_layers);
  for (int l = 0; l < s.num_layers; ++l) {
    kvcodec::DecodedLayer& d = layers[l];
    d.layer = l;
    for (int h = 0; h < s.num_kv_heads; ++h) {
      d.kept.push_back(all);
      const uint8_t* k = p.keys[l].data() + h * head_bytes;
      const uint8_t* v = p.values[l].data() + h * head_bytes;
      d.keys.emplace_back(k, k + head_bytes);
      d.values.emplace_back(v, v + head_bytes);
    }
  }
  return layers;
}

bool IsEos(const nodes::NodeModel& model, int32_t id) {
  return std::find(model.eos_ids.begin(), model.eos_ids.end(), id) != model.eos_ids.end();
}

// Attention outputs at the observation window for every query head of one layer:
// [heads, window, head_dim], from the given keys/values per KV head and their positions.
std::vector<float> WindowAttention(const engine::PrefillResult& p, const modelio::ModelConfig& cfg,
                                   int layer, int window,
                                   const std::vector<std::vector<float>>& keys,
                                   const std::vector<std::vector<float>>& values,
                                   const std::vector<std::vector<int32_t>>& positions) {
  const int H = static_cast<int>(cfg.num_attention_heads);
  const int KVH = static_cast<int>(cfg.num_key_value_heads);
  const int D = p.shape.head_dim;
  const int T = p.shape.num_tokens;
  const int group = H / KVH;
  std::vector<int32_t> qpos(window);
  for (int i = 0; i < window; ++i) qpos[i] = T - window + i;
  const std::optional<int64_t> sliding = modelio::SlidingWindowForLayer(cfg, layer);
  std::vector<float> out(static_cast<size_t>(H) * window * D);
  const std::vector<float>& q = p.debug_queries[layer];
  for (int h = 0; h < H; ++h) {
    const int g = h / group;
    std::span<const float> queries(q.data() + (static_cast<size_t>(h) * T + (T - window)) * D,
                                   static_cast<size_t>(window) * D);
    AttentionOutput(queries, qpos, keys[g], values[g], positions[g], D, sliding,
                    std::span<float>(out.data() + static_cast<size_t>(h) * window * D,
                                     static_cast<size_t>(window) * D));
  }
  return out;
}

}  // namespace

int TaskMaxNewTokens(std::string_view task) {
  static const std::map<std::string_view, int> kMax = {
      // LongBench dataset2maxlen.
      {"narrativeqa", 128}, {"qasper", 128}, {"multifieldqa_en", 64}, {"hotpotqa", 32},
      {"2wikimqa", 32}, {"musique", 32}, {"gov_report", 512}, {"qmsum", 512},
      {"multi_news", 512}, {"trec", 64}, {"triviaqa", 32}, {"samsum", 128},
      {"passage_count", 32}, {"passage_retrieval_en", 32}, {"lcc", 64}, {"repobench-p", 64},
      // RULER tokens_to_generate.
      {"niah_single_1", 128}, {"niah_single_2", 128}, {"niah_single_3", 128},
      {"niah_multikey_1", 128}, {"niah_multikey_2", 128}, {"niah_multikey_3", 128},
      {"niah_multivalue", 128}, {"niah_multiquery", 128}, {"vt", 30}, {"cwe", 120},
      {"fwe", 50}, {"qa_1", 32}, {"qa_2", 32},
      {"squad", 32}};
  auto it = kMax.find(task);
  return it == kMax.end() ? 32 : it->second;
}

absl::StatusOr<std::vector<TextSample>> CutText(std::span<const int32_t> tokens, int context_tokens,
                                                int continuation_tokens, int max_samples,
                                                std::optional<int32_t> bos, std::string_view source) {
  if (context_tokens < 2 || continuation_tokens < 1) {
    return absl::InvalidArgumentError("text samples need >= 2 context and >= 1 continuation tokens");
  }
  const int body = context_tokens - (bos ? 1 : 0);
  const size_t stride = static_cast<size_t>(body) + continuation_tokens;
  std::vector<TextSample> out;
  for (size_t start = 0; start + stride <= tokens.size(); start += stride) {
    if (max_samples > 0 && static_cast<int>(out.size()) >= max_samples) break;
    TextSample s;
    s.id = absl::StrCat(std::string(source), "#", out.size());
    if (bos) s.context.push_back(*bos);
    s.context.insert(s.context.end(), tokens.begin() + start, tokens.begin() + start + body);
    s.continuation.assign(tokens.begin() + start + body, tokens.begin() + start + stride);
    out.push_back(std::move(s));
  }
  if (out.empty()) {
    const int64_t left = static_cast<int64_t>(tokens.size()) - continuation_tokens + (bos ? 1 : 0);
    if (left < 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          std::string(source), ": the text has ", tokens.size(), " tokens, too few for a context of 2 and a continuation of ",
          continuation_tokens));
    }
    TextSample s;
    s.id = absl::StrCat(std::string(source), "#0");
    if (bos) s.context.push_back(*bos);
    const size_t split = tokens.size() - continuation_tokens;
    s.context.insert(s.context.end(), tokens.begin(), tokens.begin() + split);
    s.continuation.assign(tokens.begin() + split, tokens.end());
    out.push_back(std::move(s));
  }
  return out;
}

// A prefill result holding only the scores `method` ranks by, the form scout::SelectPositions
// takes (it would otherwise pick whichever scores the shared prefill computed).
absl::StatusOr<engine::PrefillResult> ScoresFor(const kvcodec::SelectionConfig& sel,
                                                const engine::PrefillResult& prefill,
                                                const std::map<int, kvcodec::ImportanceScores>& windows) {
  engine::PrefillResult v;
  v.shape = prefill.shape;
  switch (sel.method) {
    case SelectionMethod::kSnapKV: {
      auto it = windows.find(std::max(1, sel.window));
      if (it != windows.end()) v.window_scores = it->second;
      else v.window_scores = prefill.window_scores;
      break;
    }
    case SelectionMethod::kQ2C:
      v.question_scores = prefill.question_scores;
      break;
    case SelectionMethod::kH2O:
      v.accumulated_scores = prefill.accumulated_scores;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "global and scout selections support q2c, snapkv and h2o, not ",
          std::string(kvcodec::SelectionMethodName(sel.method))));
  }
  if (!v.window_scores && !v.question_scores && !v.accumulated_scores) {
    return absl::InternalError("the prefill lacks the scores of the selection");
  }
  return v;
}

struct Evaluator::Work {
  std::string example_id;
  std::string task;
  const TaskExample* example = nullptr;  // task mode
  std::vector<int32_t> prompt;
  int question_begin = -1;
  int question_end = -1;
  std::vector<int32_t> continuation;  // text mode
  int max_new_tokens = 0;
};

Evaluator::Evaluator(const nodes::NodeModel& model, RunnerOptions options)
    : model_(model), options_(options) {}

absl::Status Evaluator::RunExample(const TaskExample& example, std::span<const EvalConfig> configs,
                                   const SkipFn& skip, const RecordSink& sink) {
  if (absl::StatusOr<TaskSpec> spec = FindTask(example.task); !spec.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("example ", example.id, ": ", spec.status().message()));
  }
  kvwire::v1::GenerateRequest request;
  request.set_context(example.context);
  request.set_question(example.question);
  auto prompt = nodes::BuildPrompt(model_, request);
  if (!prompt.ok()) {
    return absl::Status(prompt.status().code(),
                        absl::StrCat("example ", example.id, ": ", prompt.status().message()));
  }
  Work w;
  w.example_id = example.id;
  w.task = example.task;
  w.example = &example;
  w.prompt = std::move(prompt->token_ids);
  w.question_begin = prompt->question_begin;
  w.question_end = prompt->question_end;
  w.max_new_tokens = options_.max_new_tokens > 0 ? options_.max_new_tokens : TaskMaxNewTokens(example.task);
  return Run(w, configs, skip, sink);
}

absl::Status Evaluator::RunText(const TextSample& sample, std::span<const EvalConfig> configs,
                                const SkipFn& skip, const RecordSink& sink) {
  Work w;
  w.example_id = sample.id;
  w.task = "text";
  w.prompt = sample.context;
  // The prompt's last token is stepped like the service does; the continuation follows it.
  w.continuation = sample.continuation;
  const int cached = static_cast<int>(w.prompt.size()) - 1;
  w.question_begin = std::max(0, cached - std::max(1, options_.observation_window));
  w.question_end = cached;
  return Run(w, configs, skip, sink);
}

absl::Status Evaluator::Run(Work& w, std::span<const EvalConfig> configs, const SkipFn& skip,
                            const RecordSink& sink) {
  const engine::Engine& engine = *model_.engine;
  const modelio::ModelConfig& mc = engine.config();
  std::vector<const EvalConfig*> todo;
  for (const EvalConfig& c : configs) {
    if (!skip || !skip(c, w.example_id)) todo.push_back(&c);
  }
  if (todo.empty()) return absl::OkStatus();

  const int T = static_cast<int>(w.prompt.size());
  const int64_t max_positions = mc.max_position_embeddings;
  if (T < 2) {
    return absl::InvalidArgumentError(absl::StrCat(w.example_id, ": the prompt needs at least 2 tokens"));
  }
  if (T >= max_positions) {
    return absl::InvalidArgumentError(absl::StrCat(w.example_id, ": prompt of ", T,
                                                   " tokens leaves no room to generate (max_position_embeddings ",
                                                   max_positions, ")"));
  }
  const int cached = T - 1;
  const std::span<const int32_t> cache_ids(w.prompt.data(), cached);
  const int32_t last = w.prompt.back();
  // Logits a session can produce before running out of positions.
  const int room = static_cast<int>(std::min<int64_t>(max_positions - T + 1, 1 << 20));

  // What the configurations need from the prefill.
  std::set<int> windows;
  bool need_question = false, need_accumulated = false;
  for (const EvalConfig* c : todo) {
    switch (c->codec.selection.method) {
      case SelectionMethod::kSnapKV:
      case SelectionMethod::kAnchorRule:
        windows.insert(std::max(1, c->codec.selection.window));
        break;
      case SelectionMethod::kQ2C:
        need_question = true;
        break;
      case SelectionMethod::kH2O:
        need_accumulated = true;
        break;
      default:
        break;
    }
  }
  const int q_begin = w.question_begin;
  const int q_end = std::min(w.question_end, cached);
  if (need_question && (q_begin < 0 || q_begin >= q_end)) {
    return absl::InvalidArgumentError(absl::StrCat(
        w.example_id, ": Q2C selection needs a question span inside the cache (a question of at least 2 tokens)"));
  }
  const int obs_window = std::min(std::max(1, options_.observation_window), cached);

  engine::PrefillOptions popts;
  if (!windows.empty()) popts.snapkv_window = *windows.begin();
  if (need_question) {
    popts.question_begin = q_begin;
    popts.question_end = q_end;
  }
  popts.accumulated_scores = need_accumulated;
  popts.debug_return_queries = options_.attention_error;
  const Clock::time_point prefill_start = Clock::now();
  auto prefill = engine.Prefill(cache_ids, popts);
  if (!prefill.ok()) return prefill.status();
  std::map<int, kvcodec::ImportanceScores> window_scores;
  if (prefill->window_scores) window_scores[popts.snapkv_window] = *prefill->window_scores;
  for (int win : windows) {
    if (window_scores.contains(win)) continue;
    engine::PrefillOptions extra;
    extra.snapkv_window = win;
    auto more = engine.Prefill(cache_ids, extra);
    if (!more.ok()) return more.status();
    window_scores[win] = *more->window_scores;
  }
  const double prefill_seconds = Since(prefill_start);
  const kvcodec::CacheShape& shape = prefill->shape;

  // The scout's prefill on the same tokens, when a configuration takes the scout's positions.
  std::optional<engine::PrefillResult> scout_prefill;
  std::map<int, kvcodec::ImportanceScores> scout_windows;
  for (const EvalConfig* c : todo) {
    if (c->source != SelectionSource::kScout || scout_prefill) continue;
    const nodes::NodeModel* scout = options_.scout;
    if (scout == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("configuration ", c->label.name, " selects with a scout model; give one"));
    }
    if (w.example != nullptr) {
      kvwire::v1::GenerateRequest request;
      request.set_context(w.example->context);
      request.set_question(w.example->question);
      auto scout_prompt = nodes::BuildPrompt(*scout, request);
      if (!scout_prompt.ok()) return scout_prompt.status();
      if (scout_prompt->token_ids != w.prompt) {
        return absl::InvalidArgumentError(absl::StrCat(
            w.example_id, ": the scout tokenizes the prompt differently from the model (scout transfer shares token positions)"));
      }
    } else {
      auto text = model_.tokenizer->Decode(w.prompt, /*skip_special=*/true);
      auto again = text.ok() ? scout->tokenizer->Encode(*text, false) : text.status();
      if (!again.ok() || !std::equal(again->begin(), again->end(), w.prompt.begin() + (w.prompt.size() - again->size()))) {
        return absl::InvalidArgumentError(absl::StrCat(
            w.example_id, ": the scout tokenizes the text differently from the model (scout transfer shares token positions)"));
      }
    }
    engine::PrefillOptions sopts = popts;
    sopts.debug_return_queries = false;
    auto sp = scout->engine->Prefill(cache_ids, sopts);
    if (!sp.ok()) return sp.status();
    if (sp->window_scores) scout_windows[sopts.snapkv_window] = *sp->window_scores;
    scout_prefill = *std::move(sp);
    scout_prefill->keys.clear();
    scout_prefill->values.clear();
  }
  const std::vector<kvcodec::LayerView> views = prefill->layer_views();

  // The reference: the full cache, no codec, the same decode path.
  const std::vector<kvcodec::DecodedLayer> full_layers = FullLayers(*prefill);
  auto new_reference = [&]() {
    return engine::DecodeSession::Create(engine, shape, full_layers, cached, prefill->positions);
  };
  const bool text_mode = w.example == nullptr;
  // Reference greedy continuation and its logits.
  int ref_steps = options_.fidelity_tokens;
  if (!text_mode) ref_steps = std::max(ref_steps, w.max_new_tokens);
  ref_steps = std::min(ref_steps, room);
  std::vector<std::vector<float>> ref_logits;
  std::vector<int32_t> ref_tokens;
  {
    auto session = new_reference();
    if (!session.ok()) return session.status();
    auto logits = (*session)->Step(last);
    if (!logits.ok()) return logits.status();
    for (int i = 0; i < ref_steps; ++i) {
      ref_tokens.push_back(Argmax(*logits));
      ref_logits.push_back(*std::move(logits));
      if (i + 1 < ref_steps) {
        logits = (*session)->Step(ref_tokens.back());
        if (!logits.ok()) return logits.status();
      }
    }
  }
  // Text: the reference's logits along the held-out continuation.
  const int text_steps = std::min(static_cast<int>(w.continuation.size()), room);
  std::vector<std::vector<float>> ref_text_logits;
  if (text_mode && text_steps > 0) {
    auto session = new_reference();
    if (!session.ok()) return session.status();
    auto logits = (*session)->Step(last);
    for (int i = 0; i < text_steps; ++i) {
      if (!logits.ok()) return logits.status();
      ref_text_logits.push_back(*std::move(logits));
      if (i + 1 < text_steps) logits = (*session)->Step(w.continuation[i]);
    }
  }
  // The reference attention outputs at the observation window.
  const int L = shape.num_layers, KVH = shape.num_kv_heads, D = shape.head_dim;
  std::vector<std::vector<float>> ref_attention;
  if (options_.attention_error) {
    std::vector<int32_t> all(cached);
    for (int t = 0; t < cached; ++t) all[t] = t;
    for (int l = 0; l < L; ++l) {
      std::vector<std::vector<float>> k(KVH), v(KVH);
      std::vector<std::vector<int32_t>> pos(KVH, all);
      for (int h = 0; h < KVH; ++h) {
        k[h] = ToFloat(full_layers[l].keys[h].data(), shape.dtype, static_cast<size_t>(cached) * D);
        v[h] = ToFloat(full_layers[l].values[h].data(), shape.dtype, static_cast<size_t>(cached) * D);
      }
      ref_attention.push_back(WindowAttention(*prefill, mc, l, obs_window, k, v, pos));
    }
  }

  for (const EvalConfig* c : todo) {
    EvalRecord rec;
    rec.config = c->label.name;
    rec.codec = c->label.codec;
    rec.example_id = w.example_id;
    rec.task = w.task;
    rec.prompt_tokens = T;
    rec.cached_tokens = cached;
    rec.prefill_seconds = prefill_seconds;

    kvcodec::CodecConfig codec = c->codec;
    kvcodec::SelectionConfig& sel = codec.selection;
    const kvcodec::ImportanceScores* scores = nullptr;
    switch (sel.method) {
      case SelectionMethod::kSnapKV:
      case SelectionMethod::kAnchorRule:
        scores = &window_scores.at(std::max(1, sel.window));
        break;
      case SelectionMethod::kQ2C:
        scores = &*prefill->question_scores;
        sel.protect_begin = q_begin;
        sel.protect_end = q_end;
        break;
      case SelectionMethod::kH2O:
        scores = &*prefill->accumulated_scores;
        break;
      default:
        break;
    }
    const Clock::time_point encode_start = Clock::now();
    absl::StatusOr<kvcodec::Selection> kept;
    if (c->source == SelectionSource::kOwn) {
      kept = kvcodec::Select(sel, shape, scores, cache_ids);
    } else {
      // One position set for every layer and head, from summed scores (scout::SelectPositions).
      auto positions_from = [&](const engine::PrefillResult& p, const std::map<int, kvcodec::ImportanceScores>& windows)
          -> absl::StatusOr<std::vector<int32_t>> {
        auto view = ScoresFor(c->codec.selection, p, windows);
        if (!view.ok()) return view.status();
        return scout::SelectPositions(c->codec.selection, *view, q_begin, q_end, cache_ids);
      };
      auto positions = c->source == SelectionSource::kScout ? positions_from(*scout_prefill, scout_windows)
                                                            : positions_from(*prefill, window_scores);
      if (positions.ok()) {
        kvcodec::Selection all;
        all.kept.assign(shape.num_layers, std::vector<std::vector<int32_t>>(shape.num_kv_heads, *positions));
        kept = std::move(all);
        if (c->source == SelectionSource::kScout) {
          auto own = positions_from(*prefill, window_scores);
          if (!own.ok()) return own.status();
          rec.selection_overlap = scout::Overlap(*positions, *own);
        }
      } else {
        kept = positions.status();
      }
    }
    if (!kept.ok()) return absl::Status(kept.status().code(), absl::StrCat(c->label.name, ": ", kept.status().message()));
    kvcodec::ByteAccounting acct;
    auto frame = kvcodec::EncodeFrame(shape, codec, model_.fingerprint, prefill->positions, views, *kept, &acct);
    if (!frame.ok()) return absl::Status(frame.status().code(), absl::StrCat(c->label.name, ": ", frame.status().message()));
    rec.encode_seconds = Since(encode_start);
    rec.frame_bytes = frame->size();
    rec.raw_bytes = acct.raw_bytes;
    rec.header_bytes = acct.header_bytes;
    rec.elements = acct.elements;
    rec.kept_elements = acct.kept_elements;

    const Clock::time_point decode_start = Clock::now();
    kvcodec::FrameInfo info;
    auto layers = kvcodec::DecodeFrame(*frame, {}, model_.fingerprint, &info);
    if (!layers.ok()) return absl::Status(layers.status().code(), absl::StrCat(c->label.name, ": ", layers.status().message()));
    auto new_session = [&]() {
      return engine::DecodeSession::Create(engine, info.shape, *layers, cached, info.positions);
    };
    auto session = new_session();
    if (!session.ok()) return session.status();
    rec.decode_seconds = Since(decode_start);

    // Reconstruction and attention errors (not timed).
    for (int l = 0; l < L; ++l) {
      const kvcodec::DecodedLayer& dl = (*layers)[l];
      ErrorSums ke, ve, ae;
      std::vector<std::vector<float>> k(KVH), v(KVH);
      std::vector<std::vector<int32_t>> pos(KVH);
      for (int h = 0; h < KVH; ++h) {
        const size_t n = dl.kept[h].size() * D;
        k[h] = ToFloat(dl.keys[h].data(), info.shape.dtype, n);
        v[h] = ToFloat(dl.values[h].data(), info.shape.dtype, n);
        std::vector<float> kref(n), vref(n);
        for (size_t i = 0; i < dl.kept[h].size(); ++i) {
          const int t = dl.kept[h][i];
          pos[h].push_back(info.positions[t]);
          const size_t row = static_cast<size_t>(D) * kvcodec::DTypeSize(shape.dtype);
          const size_t at = (static_cast<size_t>(h) * cached + t) * row;
          std::vector<float> kr = ToFloat(prefill->keys[l].data() + at, shape.dtype, D);
          std::vector<float> vr = ToFloat(prefill->values[l].data() + at, shape.dtype, D);
          std::copy(kr.begin(), kr.end(), kref.begin() + i * D);
          std::copy(vr.begin(), vr.end(), vref.begin() + i * D);
        }
        ke.Add(kref, k[h]);
        ve.Add(vref, v[h]);
      }
      rec.key_error.push_back(ke.relative());
      rec.value_error.push_back(ve.relative());
      if (options_.attention_error) {
        ae.Add(ref_attention[l], WindowAttention(*prefill, mc, l, obs_window, k, v, pos));
        rec.attention_error.push_back(ae.relative());
      }
    }

    // Generation (task examples) and fidelity along the reference's greedy tokens.
    const Clock::time_point generate_start = Clock::now();
    const int n_fid = std::min(options_.fidelity_tokens, static_cast<int>(ref_logits.size()));
    int compared = 0;
    auto logits = (*session)->Step(last);
    if (!logits.ok()) return logits.status();
    if (!text_mode) {
      const int max_new = std::min(w.max_new_tokens, room);
      std::vector<int32_t> own;
      bool generating = max_new > 0, consistent = true;
      for (int i = 0;; ++i) {
        if (consistent && i < n_fid) {
          rec.fidelity.AddStep(ref_logits[i], *logits);
          compared = i + 1;
        }
        int32_t next;
        if (generating) {
          next = Argmax(*logits);
          own.push_back(next);
          if (IsEos(model_, next) || static_cast<int>(own.size()) >= max_new) generating = false;
        } else {
          next = ref_tokens[i];
        }
        if (i >= static_cast<int>(ref_tokens.size()) || next != ref_tokens[i]) consistent = false;
        if (!generating && !(consistent && compared < n_fid)) break;
        logits = (*session)->Step(next);
        if (!logits.ok()) return logits.status();
      }
      while (!own.empty() && IsEos(model_, own.back())) own.pop_back();
      auto text = model_.tokenizer->Decode(own, /*skip_special=*/true);
      if (!text.ok()) return text.status();
      rec.prediction = *text;
      auto score = ScoreExample(*w.example, rec.prediction);
      if (!score.ok()) {
        return absl::Status(score.status().code(), absl::StrCat("example ", w.example_id, ": ", score.status().message()));
      }
      rec.score = *score;
    } else {
      for (int i = 0; i < text_steps; ++i) {
        rec.fidelity.AddToken(ref_text_logits[i], *logits, w.continuation[i]);
        if (i + 1 < text_steps) {
          logits = (*session)->Step(w.continuation[i]);
          if (!logits.ok()) return logits.status();
        }
      }
    }
    rec.generate_seconds = Since(generate_start);
    // Fidelity steps the first session could not cover (it left the reference's path).
    if (compared < n_fid) {
      auto tf = new_session();
      if (!tf.ok()) return tf.status();
      auto l2 = (*tf)->Step(last);
      for (int i = 0; i < n_fid; ++i) {
        if (!l2.ok()) return l2.status();
        if (i >= compared) rec.fidelity.AddStep(ref_logits[i], *l2);
        if (i + 1 < n_fid) l2 = (*tf)->Step(ref_tokens[i]);
      }
    }
    if (absl::Status s = sink(std::move(rec)); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace kvwire::eval
