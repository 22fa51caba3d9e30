// Engine tests on tiny random checkpoints of each architecture. The references are the
// engine's own other code paths (unchunked prefill, full-prompt prefill) plus an explicit
// full attention matrix computed here with plain ATen ops.
#include "server/engine/engine.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <numbers>
#include <string>
#include <vector>

#include "server/modelio/random_checkpoint.h"

namespace kvwire::engine {
namespace {

using modelio::Architecture;
using modelio::RopeScaling;

constexpr int kVocab = 300;
constexpr int kMaxPositions = 64;

ModelConfig TinyConfig(Architecture arch) {
  ModelConfig c;
  c.architecture = arch;
  c.vocab_size = kVocab;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.max_position_embeddings = kMaxPositions;
  c.rms_norm_eps = 1e-5;
  c.bos_token_ids = {1};
  c.eos_token_ids = {2};
  switch (arch) {
    case Architecture::kLlama:
      // original_max 32 with low_freq_factor 0.5 puts the llama3 band edges (wavelengths 8
      // and 64) inside this head_dim's range, so all three branches of the formula are
      // exercised (RopeMatchesReferenceFrequencies checks the values).
      c.rope_theta = 500000.0;
      c.rope_scaling = {RopeScaling::Type::kLlama3, 8.0, 0.5, 4.0, 32};
      break;
    case Architecture::kQwen2:
      c.rope_theta = 1000000.0;
      c.attention_bias = true;
      c.tie_word_embeddings = true;
      break;
    case Architecture::kMistral:
      c.sliding_window = 5;  // much shorter than the test prompts
      break;
  }
  return c;
}

std::string ArchName(Architecture arch) { return std::string(modelio::ModelTypeName(arch)); }

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "engine_test_XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::vector<int32_t> Prompt(int n, uint32_t seed = 12345) {
  std::vector<int32_t> out(n);
  for (int i = 0; i < n; ++i) {
    seed = seed * 1664525u + 1013904223u;
    out[i] = static_cast<int32_t>((seed >> 8) % kVocab);
  }
  return out;
}

float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

// Splits a prefill result into kvcodec's DecodedLayer form, keeping kept(layer, head).
template <typename KeepFn>
std::vector<kvcodec::DecodedLayer> ToDecoded(const PrefillResult& r, KeepFn kept) {
  const kvcodec::CacheShape& s = r.shape;
  const size_t row = static_cast<size_t>(s.head_dim) * kvcodec::DTypeSize(s.dtype);
  std::vector<kvcodec::DecodedLayer> layers(s.num_layers);
  for (int l = 0; l < s.num_layers; ++l) {
    layers[l].layer = l;
    for (int h = 0; h < s.num_kv_heads; ++h) {
      std::vector<int32_t> k = kept(l, h);
      kvcodec::ByteBuffer keys, values;
      for (int32_t t : k) {
        const size_t off = (static_cast<size_t>(h) * s.num_tokens + t) * row;
        keys.insert(keys.end(), r.keys[l].begin() + off, r.keys[l].begin() + off + row);
        values.insert(values.end(), r.values[l].begin() + off, r.values[l].begin() + off + row);
      }
      layers[l].kept.push_back(std::move(k));
      layers[l].keys.push_back(std::move(keys));
      layers[l].values.push_back(std::move(values));
    }
  }
  return layers;
}

std::vector<int32_t> Range(int begin, int end) {
  std::vector<int32_t> v;
  for (int i = begin; i < end; ++i) v.push_back(i);
  return v;
}

class EngineTest : public ::testing::TestWithParam<Architecture> {
 protected:
  void SetUp() override {
    config_ = TinyConfig(GetParam());
    ASSERT_TRUE(
        modelio::WriteRandomCheckpoint(dir_.path(), config_, 7, modelio::Dtype::kF32).ok());
  }

  std::unique_ptr<Engine> Load(int chunk, const std::string& dtype = "float32") {
    EngineOptions o;
    o.model_dir = dir_.path();
    o.prefill_chunk = chunk;
    o.dtype = dtype;
    o.threads = 2;
    absl::StatusOr<std::unique_ptr<Engine>> e = Engine::Load(o);
    EXPECT_TRUE(e.ok()) << e.status();
    return e.ok() ? *std::move(e) : nullptr;
  }

  TempDir dir_;
  ModelConfig config_;
};

TEST_P(EngineTest, ChunkedPrefillMatchesUnchunked) {
  auto whole = Load(512);
  auto chunked = Load(7);
  ASSERT_TRUE(whole && chunked);
  const std::vector<int32_t> prompt = Prompt(23);
  auto a = whole->Prefill(prompt);
  auto b = chunked->Prefill(prompt);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_EQ(a->last_logits.size(), static_cast<size_t>(kVocab));
  EXPECT_LT(MaxAbsDiff(a->last_logits, b->last_logits), 1e-4);
  EXPECT_EQ(a->shape.num_tokens, 23);
  EXPECT_EQ(a->shape.num_layers, 2);
  EXPECT_EQ(a->shape.num_kv_heads, 2);
  EXPECT_EQ(a->shape.head_dim, 16);
  EXPECT_EQ(a->shape.dtype, kvcodec::DType::kFloat32);
  EXPECT_EQ(a->positions, Range(0, 23));
  for (int l = 0; l < 2; ++l) {
    ASSERT_EQ(a->keys[l].size(), 2u * 23 * 16 * 4);
    std::vector<float> ka(2 * 23 * 16), kb(ka.size());
    std::memcpy(ka.data(), a->keys[l].data(), a->keys[l].size());
    std::memcpy(kb.data(), b->keys[l].data(), b->keys[l].size());
    EXPECT_LT(MaxAbsDiff(ka, kb), 1e-5);
  }
  // Sanity: the logits depend on the prompt (so the comparisons above are not vacuous).
  auto shorter = whole->Prefill(std::span(prompt).first(22));
  ASSERT_TRUE(shorter.ok());
  EXPECT_GT(MaxAbsDiff(a->last_logits, shorter->last_logits), 1e-3);
}

// on_layer hands out each layer once, in order, with the bytes and score rows the result holds;
// an error from it stops the prefill.
TEST_P(EngineTest, OnLayerStreamsFinalLayersInOrder) {
  auto engine = Load(7);
  ASSERT_TRUE(engine);
  const std::vector<int32_t> prompt = Prompt(23);
  std::vector<int> order;
  std::vector<std::vector<uint8_t>> keys, values;
  std::vector<std::vector<float>> window, question;
  PrefillOptions o;
  o.snapkv_window = 4;
  o.question_begin = 18;
  o.question_end = 23;
  o.on_layer = [&](const PrefillLayer& layer) {
    order.push_back(layer.layer);
    keys.emplace_back(layer.keys.begin(), layer.keys.end());
    values.emplace_back(layer.values.begin(), layer.values.end());
    window.push_back(layer.window_scores);
    question.push_back(layer.question_scores);
    EXPECT_TRUE(layer.accumulated_scores.empty());
    return absl::OkStatus();
  };
  auto r = engine->Prefill(prompt, o);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(order, Range(0, 2));
  const size_t per_layer = 2u * 23;
  for (int l = 0; l < 2; ++l) {
    EXPECT_EQ(keys[l], r->keys[l]);
    EXPECT_EQ(values[l], r->values[l]);
    const auto w = std::span(r->window_scores->values).subspan(l * per_layer, per_layer);
    const auto q = std::span(r->question_scores->values).subspan(l * per_layer, per_layer);
    EXPECT_EQ(window[l], std::vector<float>(w.begin(), w.end()));
    EXPECT_EQ(question[l], std::vector<float>(q.begin(), q.end()));
  }
  int calls = 0;
  o.on_layer = [&](const PrefillLayer&) {
    ++calls;
    return absl::CancelledError("client went away");
  };
  EXPECT_EQ(engine->Prefill(prompt, o).status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(calls, 1);
}

// Regression: when a prefill failed part-way, the layers on_layer had handed out were freed
// with the result while the prefill node's encoder thread could still be reading them.
// PrefillInto keeps them in the caller's result, failure or not.
TEST_P(EngineTest, PrefillIntoKeepsHandedOutLayersWhenItFails) {
  auto engine = Load(7);
  ASSERT_TRUE(engine);
  const std::vector<int32_t> prompt = Prompt(23);
  PrefillResult result;
  std::span<const uint8_t> first;
  std::vector<uint8_t> first_copy;
  PrefillOptions o;
  o.on_layer = [&](const PrefillLayer& layer) -> absl::Status {
    if (layer.layer == 0) {
      first = layer.keys;
      first_copy.assign(layer.keys.begin(), layer.keys.end());
      return absl::OkStatus();
    }
    return absl::CancelledError("stop at layer 1");
  };
  EXPECT_EQ(engine->PrefillInto(prompt, o, &result).code(), absl::StatusCode::kCancelled);
  ASSERT_EQ(result.keys.size(), 2u);
  EXPECT_EQ(first.data(), result.keys[0].data());
  EXPECT_EQ(result.keys[0], first_copy);
  // On success it fills the same result as Prefill.
  o.on_layer = nullptr;
  ASSERT_TRUE(engine->PrefillInto(prompt, o, &result).ok());
  auto whole = engine->Prefill(prompt);
  ASSERT_TRUE(whole.ok());
  EXPECT_EQ(result.keys, whole->keys);
  EXPECT_EQ(result.last_logits, whole->last_logits);
}

// The interrupt is asked per layer of every chunk, not only once layers are final: a cancelled
// request stops within a layer even on a long prompt.
TEST_P(EngineTest, InterruptStopsThePrefillWithinALayer) {
  auto engine = Load(7);
  ASSERT_TRUE(engine);
  const std::vector<int32_t> prompt = Prompt(23);  // chunks of 7: 4 chunks x 2 layers
  int asked = 0;
  PrefillOptions o;
  o.interrupt = [&]() -> absl::Status {
    return ++asked == 3 ? absl::DeadlineExceededError("too late") : absl::OkStatus();
  };
  bool any_layer = false;
  o.on_layer = [&](const PrefillLayer&) {
    any_layer = true;
    return absl::OkStatus();
  };
  EXPECT_EQ(engine->Prefill(prompt, o).status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(asked, 3);
  EXPECT_FALSE(any_layer);  // stopped in the second chunk, long before the last
  asked = -100;
  ASSERT_TRUE(engine->Prefill(prompt, o).ok());
  EXPECT_EQ(asked, -100 + 8);
}

TEST_P(EngineTest, DecodeStepMatchesLongerPrefill) {
  auto engine = Load(7);
  ASSERT_TRUE(engine);
  const std::vector<int32_t> prompt = Prompt(25);
  const int T = 22;
  auto prefix = engine->Prefill(std::span(prompt).first(T));
  ASSERT_TRUE(prefix.ok()) << prefix.status();
  auto session = DecodeSession::FromPrefill(*engine, *prefix);
  ASSERT_TRUE(session.ok()) << session.status();
  // Several steps, so RoPE positions and the growing cache are checked beyond the first.
  for (int t = T; t < 25; ++t) {
    EXPECT_EQ((*session)->position(), t);
    auto step = (*session)->Step(prompt[t]);
    ASSERT_TRUE(step.ok()) << step.status();
    auto full = engine->Prefill(std::span(prompt).first(t + 1));
    ASSERT_TRUE(full.ok());
    EXPECT_LT(MaxAbsDiff(*step, full->last_logits), 1e-4) << "step to position " << t;
  }
}

TEST_P(EngineTest, ScoresMatchFullAttentionMatrix) {
  auto engine = Load(7);
  ASSERT_TRUE(engine);
  const int T = 20, window = 4, qb = 3, qe = 9;
  const std::vector<int32_t> prompt = Prompt(T);
  PrefillOptions opts;
  opts.snapkv_window = window;
  opts.question_begin = qb;
  opts.question_end = qe;
  opts.accumulated_scores = true;
  opts.prefill_chunk_override = 6;  // accumulation must add up across chunks
  opts.debug_return_queries = true;
  auto r = engine->Prefill(prompt, opts);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->window_scores && r->question_scores && r->accumulated_scores);
  ASSERT_EQ(r->debug_queries.size(), 2u);
  const int H = 4, KVH = 2, D = 16, G = H / KVH;
  for (int l = 0; l < 2; ++l) {
    at::Tensor q = at::from_blob(const_cast<float*>(r->debug_queries[l].data()), {H, T, D},
                                 at::kFloat);
    at::Tensor k = at::from_blob(const_cast<uint8_t*>(r->keys[l].data()), {KVH, T, D},
                                 at::kFloat);
    at::Tensor scores = at::matmul(q, k.repeat_interleave(G, 0).transpose(1, 2)) / std::sqrt(D);
    at::Tensor qi = at::arange(T).unsqueeze(1), ki = at::arange(T).unsqueeze(0);
    at::Tensor allowed = ki.le(qi);
    if (auto w = modelio::SlidingWindowForLayer(config_, l)) {
      allowed = allowed.logical_and((qi - ki).lt(*w));
    }
    at::Tensor probs = at::softmax(scores.masked_fill(allowed.logical_not(), -INFINITY), -1);
    auto reduce = [&](int b, int e) {
      return probs.narrow(1, b, e - b).sum(1).view({KVH, G, T}).sum(1).contiguous();
    };
    at::Tensor ref_window = reduce(T - window, T);
    at::Tensor ref_question = reduce(qb, qe);
    at::Tensor ref_accumulated = reduce(0, T);
    for (int h = 0; h < KVH; ++h) {
      float total = 0;
      for (int t = 0; t < T; ++t) {
        EXPECT_NEAR(r->window_scores->at(l, h, t), ref_window[h][t].item<float>(), 1e-5)
            << "layer " << l << " head " << h << " token " << t;
        EXPECT_NEAR(r->question_scores->at(l, h, t), ref_question[h][t].item<float>(), 1e-5);
        EXPECT_NEAR(r->accumulated_scores->at(l, h, t), ref_accumulated[h][t].item<float>(), 1e-4);
        total += r->window_scores->at(l, h, t);
      }
      // Each query row is a distribution; G heads x window rows.
      EXPECT_NEAR(total, G * window, 1e-4);
    }
  }
}

TEST_P(EngineTest, PrunedAndRaggedCachesDecode) {
  auto engine = Load(7);
  ASSERT_TRUE(engine);
  const int T = 21;
  const std::vector<int32_t> prompt = Prompt(T + 1);
  auto prefix = engine->Prefill(std::span(prompt).first(T));
  auto full = engine->Prefill(prompt);
  ASSERT_TRUE(prefix.ok() && full.ok());

  // Keeping every position through the generic path reproduces the longer prefill.
  auto all = ToDecoded(*prefix, [&](int, int) { return Range(0, T); });
  auto s_all = DecodeSession::Create(*engine, prefix->shape, all, T);
  ASSERT_TRUE(s_all.ok()) << s_all.status();
  auto logits_all = (*s_all)->Step(prompt[T]);
  ASSERT_TRUE(logits_all.ok());
  EXPECT_LT(MaxAbsDiff(*logits_all, full->last_logits), 1e-4);

  // Ragged pruning: head 0 keeps even positions, head 1 the last 6, layer 1 head 1 nothing.
  auto pruned = ToDecoded(*prefix, [&](int l, int h) {
    std::vector<int32_t> k;
    if (h == 0) {
      for (int t = 0; t < T; t += 2) k.push_back(t);
    } else if (l == 0) {
      k = Range(T - 6, T);
    }
    return k;
  });
  auto s_pruned = DecodeSession::Create(*engine, prefix->shape, pruned, T);
  ASSERT_TRUE(s_pruned.ok()) << s_pruned.status();
  auto generated = GenerateGreedy(**s_pruned, prompt[T], 5, {});
  ASSERT_TRUE(generated.ok()) << generated.status();
  EXPECT_EQ(generated->size(), 5u);
  EXPECT_EQ((*s_pruned)->position(), T + 5);
  for (int32_t id : *generated) EXPECT_TRUE(id >= 0 && id < kVocab);

  // Greedy generation stops at (and includes) an eos token.
  auto s2 = DecodeSession::FromPrefill(*engine, *prefix);
  ASSERT_TRUE(s2.ok());
  auto first = GenerateGreedy(**s2, prompt[T], 3, {});
  ASSERT_TRUE(first.ok());
  auto s3 = DecodeSession::FromPrefill(*engine, *prefix);
  ASSERT_TRUE(s3.ok());
  const int32_t eos[] = {(*first)[0]};
  auto stopped = GenerateGreedy(**s3, prompt[T], 3, eos);
  ASSERT_TRUE(stopped.ok());
  EXPECT_EQ(*stopped, std::vector<int32_t>{(*first)[0]});
}

// A cache imported with FrameInfo-style positions: kept entries are token indices and
// positions[i] is index i's original position.
TEST_P(EngineTest, PositionsMapTokenIndicesToOriginalPositions) {
  auto engine = Load(7);
  ASSERT_TRUE(engine);
  const int T = 21;
  const std::vector<int32_t> prompt = Prompt(T + 1);
  auto prefix = engine->Prefill(std::span(prompt).first(T));
  ASSERT_TRUE(prefix.ok());
  using absl::StatusCode;

  // positions 0..T-1 behave exactly as the call without positions.
  auto all = ToDecoded(*prefix, [&](int, int) { return Range(0, T); });
  auto plain = DecodeSession::Create(*engine, prefix->shape, all, T);
  const std::vector<int32_t> identity = Range(0, T);
  auto with_pos = DecodeSession::Create(*engine, prefix->shape, all, T, identity);
  auto from_zero = DecodeSession::Create(*engine, prefix->shape, all, 0, identity);
  ASSERT_TRUE(plain.ok() && with_pos.ok() && from_zero.ok()) << with_pos.status();
  EXPECT_EQ((*with_pos)->position(), T);
  EXPECT_EQ((*from_zero)->position(), T);  // continues after positions.back()
  auto a = (*plain)->Step(prompt[T]);
  auto b = (*with_pos)->Step(prompt[T]);
  auto c = (*from_zero)->Step(prompt[T]);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(*a, *b);
  EXPECT_EQ(*a, *c);

  // A frame that holds only some tokens (index i = original position sparse[i]) decodes
  // exactly like the same rows imported by original position.
  const std::vector<int32_t> sparse = {0, 2, 3, 7, 11, 12, 15, 18, 19, 20};
  const int m = static_cast<int>(sparse.size());
  auto by_position = ToDecoded(*prefix, [&](int l, int h) {
    // Ragged on top: layer 1 head 0 also drops the token at index 1 (position 2).
    std::vector<int32_t> k = sparse;
    if (l == 1 && h == 0) k.erase(k.begin() + 1);
    return k;
  });
  auto by_index = by_position;
  for (kvcodec::DecodedLayer& dl : by_index) {
    for (size_t h = 0; h < dl.kept.size(); ++h) {
      for (int32_t& k : dl.kept[h]) {
        k = static_cast<int32_t>(std::find(sparse.begin(), sparse.end(), k) - sparse.begin());
      }
    }
  }
  kvcodec::CacheShape frame_shape = prefix->shape;
  frame_shape.num_tokens = m;
  auto ref = DecodeSession::Create(*engine, prefix->shape, by_position, T);
  auto mapped = DecodeSession::Create(*engine, frame_shape, by_index, 0, sparse);
  ASSERT_TRUE(ref.ok() && mapped.ok()) << mapped.status();
  EXPECT_EQ((*mapped)->position(), T);
  auto gen_ref = GenerateGreedy(**ref, prompt[T], 4, {});
  auto gen_mapped = GenerateGreedy(**mapped, prompt[T], 4, {});
  ASSERT_TRUE(gen_ref.ok() && gen_mapped.ok());
  EXPECT_EQ(*gen_ref, *gen_mapped);
  // Without positions the indices would be taken as positions 0..m-1: different logits.
  auto ref2 = DecodeSession::Create(*engine, prefix->shape, by_position, T);
  auto mapped2 = DecodeSession::Create(*engine, frame_shape, by_index, 0, sparse);
  auto naive = DecodeSession::Create(*engine, frame_shape, by_index, m);
  ASSERT_TRUE(ref2.ok() && mapped2.ok() && naive.ok());
  auto l_ref = (*ref2)->Step(prompt[T]);
  auto l_mapped = (*mapped2)->Step(prompt[T]);
  auto l_naive = (*naive)->Step(prompt[T]);
  ASSERT_TRUE(l_ref.ok() && l_mapped.ok() && l_naive.ok());
  EXPECT_EQ(*l_ref, *l_mapped);
  EXPECT_GT(MaxAbsDiff(*l_ref, *l_naive), 1e-4);
  // A prompt_length past the last cached position (the frame dropped the prompt's tail).
  auto later = DecodeSession::Create(*engine, frame_shape, by_index, T + 3, sparse);
  ASSERT_TRUE(later.ok());
  EXPECT_EQ((*later)->position(), T + 3);

  // Wrong length, non-increasing or out-of-range positions, indices past the frame.
  const std::vector<int32_t> short_pos = Range(0, T - 1);
  EXPECT_EQ(DecodeSession::Create(*engine, prefix->shape, all, T, short_pos).status().code(),
            StatusCode::kInvalidArgument);
  const std::vector<int32_t> long_pos = Range(0, T + 1);
  EXPECT_EQ(DecodeSession::Create(*engine, prefix->shape, all, T, long_pos).status().code(),
            StatusCode::kInvalidArgument);
  std::vector<int32_t> repeated = identity;
  repeated[5] = repeated[4];
  EXPECT_EQ(DecodeSession::Create(*engine, prefix->shape, all, T, repeated).status().code(),
            StatusCode::kInvalidArgument);
  std::vector<int32_t> too_far = identity;
  too_far.back() = kMaxPositions;
  EXPECT_EQ(DecodeSession::Create(*engine, prefix->shape, all, T, too_far).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeSession::Create(*engine, frame_shape, by_position, 0, sparse).status().code(),
            StatusCode::kInvalidArgument);  // kept 11.. >= m token indices
}

TEST_P(EngineTest, BFloat16EngineIsCloseToFloat32) {
  auto f32 = Load(7);
  auto bf16 = Load(7, "bfloat16");
  ASSERT_TRUE(f32 && bf16);
  EXPECT_EQ(bf16->cache_dtype(), kvcodec::DType::kBFloat16);
  const std::vector<int32_t> prompt = Prompt(16);
  auto a = f32->Prefill(prompt);
  auto b = bf16->Prefill(prompt);
  ASSERT_TRUE(a.ok() && b.ok()) << b.status();
  EXPECT_EQ(b->shape.dtype, kvcodec::DType::kBFloat16);
  EXPECT_EQ(b->keys[0].size(), 2u * 16 * 16 * 2);
  EXPECT_LT(MaxAbsDiff(a->last_logits, b->last_logits), 2e-2);
  // A bf16 cache can be imported into the f32 engine (converted on import).
  auto s = DecodeSession::FromPrefill(*f32, *b);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE((*s)->Step(5).ok());
}

TEST_P(EngineTest, BadInputs) {
  auto engine = Load(7);
  ASSERT_TRUE(engine);
  using absl::StatusCode;
  EXPECT_EQ(engine->Prefill({}).status().code(), StatusCode::kInvalidArgument);
  const int32_t too_big[] = {1, kVocab};
  EXPECT_EQ(engine->Prefill(too_big).status().code(), StatusCode::kInvalidArgument);
  const int32_t negative[] = {-1};
  EXPECT_EQ(engine->Prefill(negative).status().code(), StatusCode::kInvalidArgument);
  const std::vector<int32_t> too_long = Prompt(kMaxPositions + 1);
  EXPECT_EQ(engine->Prefill(too_long).status().code(), StatusCode::kInvalidArgument);
  PrefillOptions bad_question;
  bad_question.question_begin = 5;
  bad_question.question_end = 50;
  EXPECT_EQ(engine->Prefill(Prompt(10), bad_question).status().code(),
            StatusCode::kInvalidArgument);

  auto prefix = engine->Prefill(Prompt(10));
  ASSERT_TRUE(prefix.ok());
  auto layers = ToDecoded(*prefix, [](int, int) { return Range(0, 10); });
  kvcodec::CacheShape wrong = prefix->shape;
  wrong.num_kv_heads = 4;
  EXPECT_EQ(DecodeSession::Create(*engine, wrong, layers, 10).status().code(),
            StatusCode::kInvalidArgument);
  wrong = prefix->shape;
  wrong.head_dim = 8;
  EXPECT_EQ(DecodeSession::Create(*engine, wrong, layers, 10).status().code(),
            StatusCode::kInvalidArgument);
  // Kept positions beyond the prompt, and buffers that do not match the kept count.
  EXPECT_EQ(DecodeSession::Create(*engine, prefix->shape, layers, 9).status().code(),
            StatusCode::kInvalidArgument);
  auto short_buffer = layers;
  short_buffer[1].keys[0].pop_back();
  EXPECT_EQ(DecodeSession::Create(*engine, prefix->shape, short_buffer, 10).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeSession::Create(*engine, prefix->shape, std::span(layers).first(1), 10)
                .status()
                .code(),
            StatusCode::kInvalidArgument);

  // A prompt length past the last kept position is legal (the tail was pruned); starting
  // near the limit keeps the walk to max_position_embeddings short.
  const int start = kMaxPositions - 3;
  auto session = DecodeSession::Create(*engine, prefix->shape, layers, start);
  ASSERT_TRUE(session.ok());
  EXPECT_EQ((*session)->Step(kVocab).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*session)->position(), start);  // a rejected step does not advance
  // Decoding runs up to max_position_embeddings and then refuses.
  for (int p = start; p < kMaxPositions; ++p) ASSERT_TRUE((*session)->Step(3).ok());
  EXPECT_EQ((*session)->Step(3).status().code(), StatusCode::kInvalidArgument);

  EngineOptions o;
  o.model_dir = dir_.path();
  o.dtype = "float16";
  EXPECT_EQ(Engine::Load(o).status().code(), StatusCode::kInvalidArgument);
  o.dtype = "float32";
  o.prefill_chunk = 0;
  EXPECT_EQ(Engine::Load(o).status().code(), StatusCode::kInvalidArgument);
  o.prefill_chunk = 512;
  o.model_dir = dir_.path() + "/missing";
  EXPECT_EQ(Engine::Load(o).status().code(), StatusCode::kNotFound);
}

INSTANTIATE_TEST_SUITE_P(Architectures, EngineTest,
                         ::testing::Values(Architecture::kLlama, Architecture::kQwen2,
                                           Architecture::kMistral),
                         [](const auto& info) { return ArchName(info.param); });

// RoPE against frequencies computed independently (Python, following transformers'
// _compute_llama3_parameters in float64) for TinyConfig(kLlama): theta 5e5, head_dim 16,
// factor 8, low 0.5, high 4, original 32 -> dim pair 0 kept, 1 smoothed, 2..7 scaled.
// Layer 0's pre-RoPE query depends only on the token, so repeating one token makes the
// query at position p the position-0 query rotated by p * inv_freq[i] in each pair
// (i, i + 8) - which also pins the rotate_half (non-interleaved) layout.
TEST(EngineRopeTest, RopeMatchesReferenceFrequencies) {
  const double kInvFreq[8] = {1,           0.0478814857,   0.00470075387, 0.000911583092,
                              0.000176776695, 3.4281022e-05, 6.64786987e-06, 1.28917317e-06};
  TempDir dir;
  ASSERT_TRUE(modelio::WriteRandomCheckpoint(dir.path(), TinyConfig(Architecture::kLlama), 3,
                                             modelio::Dtype::kF32)
                  .ok());
  EngineOptions o;
  o.model_dir = dir.path();
  o.threads = 2;
  auto engine = Engine::Load(o);
  ASSERT_TRUE(engine.ok()) << engine.status();
  const std::vector<int32_t> prompt(40, 17);
  PrefillOptions opts;
  opts.debug_return_queries = true;
  auto r = (*engine)->Prefill(prompt, opts);
  ASSERT_TRUE(r.ok()) << r.status();
  const std::vector<float>& q = r->debug_queries[0];  // [heads, 40, 16], head 0 first
  for (int p : {1, 39}) {
    for (int i = 0; i < 8; ++i) {
      const double a = q[i], b = q[i + 8], c = q[p * 16 + i], d = q[p * 16 + i + 8];
      const double angle = std::atan2(a * d - b * c, a * c + b * d);
      const double expected = std::remainder(p * kInvFreq[i], 2 * std::numbers::pi);
      EXPECT_NEAR(angle, expected, 2e-5 + 1e-4 * std::abs(expected))
          << "position " << p << " pair " << i;
    }
  }
}

// The sliding window must change the result once the prompt is longer than it (guards
// against the window silently not being applied).
TEST(EngineWindowTest, SlidingWindowChangesLogits) {
  TempDir with, without;
  ModelConfig c = TinyConfig(Architecture::kMistral);
  ASSERT_TRUE(modelio::WriteRandomCheckpoint(with.path(), c, 7, modelio::Dtype::kF32).ok());
  c.sliding_window.reset();
  ASSERT_TRUE(modelio::WriteRandomCheckpoint(without.path(), c, 7, modelio::Dtype::kF32).ok());
  EngineOptions o;
  o.threads = 2;
  o.model_dir = with.path();
  auto a = Engine::Load(o);
  o.model_dir = without.path();
  auto b = Engine::Load(o);
  ASSERT_TRUE(a.ok() && b.ok());
  auto ra = (*a)->Prefill(Prompt(4));
  auto rb = (*b)->Prefill(Prompt(4));
  ASSERT_TRUE(ra.ok() && rb.ok());
  EXPECT_LT(MaxAbsDiff(ra->last_logits, rb->last_logits), 1e-6);  // within the window: equal
  ra = (*a)->Prefill(Prompt(20));
  rb = (*b)->Prefill(Prompt(20));
  ASSERT_TRUE(ra.ok() && rb.ok());
  EXPECT_GT(MaxAbsDiff(ra->last_logits, rb->last_logits), 1e-4);
}

// This libtorch is CPU-only: "cuda" is refused with a clear FailedPrecondition, an unknown
// device string with InvalidArgument.
TEST(EngineDeviceTest, DeviceSelection) {
  TempDir dir;
  ASSERT_TRUE(modelio::WriteRandomCheckpoint(dir.path(), TinyConfig(Architecture::kLlama), 3,
                                             modelio::Dtype::kF32)
                  .ok());
  EngineOptions o;
  o.model_dir = dir.path();
  o.threads = 2;
  o.device = "cpu";
  EXPECT_TRUE(Engine::Load(o).ok());
  using absl::StatusCode;
  if (!at::hasCUDA()) {
    for (const char* cuda : {"cuda", "cuda:0", "cuda:3"}) {
      o.device = cuda;
      absl::Status st = Engine::Load(o).status();
      EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition) << cuda << ": " << st;
      EXPECT_THAT(std::string(st.message()),
                  ::testing::AnyOf(::testing::HasSubstr("this build of libtorch has no CUDA"),
                                   ::testing::HasSubstr("no CUDA device")))
          << st;
    }
  }
  for (const char* bad : {"gpu", "CPU", "cuda:", "cuda:x", "cuda:-1", "cuda:0 ", "", "mps"}) {
    o.device = bad;
    absl::Status st = Engine::Load(o).status();
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << "'" << bad << "': " << st;
    EXPECT_THAT(std::string(st.message()), ::testing::HasSubstr("device")) << st;
  }
}

// Manual benchmark: ./engine_test --gtest_also_run_disabled_tests
// --gtest_filter='*Throughput*'. A ~100M-parameter-shaped random Llama, float32.
TEST(EngineBenchmark, DISABLED_PrefillThroughput) {
  // KVWIRE_BENCH_DIR reuses a checkpoint across runs (writing it takes longer than the run).
  TempDir tmp;
  const char* env_dir = std::getenv("KVWIRE_BENCH_DIR");
  const std::string dir = env_dir != nullptr ? env_dir : tmp.path();
  ModelConfig c = TinyConfig(Architecture::kLlama);
  c.hidden_size = 1024;
  c.intermediate_size = 2816;
  c.num_hidden_layers = 8;
  c.num_attention_heads = 16;
  c.num_key_value_heads = 4;
  c.head_dim = 64;
  c.vocab_size = 32000;
  c.max_position_embeddings = 4096;
  c.rope_scaling = {};
  if (!std::filesystem::exists(dir + "/config.json")) {
    ASSERT_TRUE(modelio::WriteRandomCheckpoint(dir, c, 1, modelio::Dtype::kBF16).ok());
  }
  for (const char* dtype : {"float32", "bfloat16"}) {
    EngineOptions o;
    o.model_dir = dir;
    if (const char* t = std::getenv("KVWIRE_BENCH_THREADS")) o.threads = std::atoi(t);
    o.dtype = dtype;
    auto e = Engine::Load(o);
    ASSERT_TRUE(e.ok()) << e.status();
    std::vector<int32_t> prompt(1024);
    for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>(i * 7 % 32000);
    ASSERT_TRUE((*e)->Prefill(std::span(prompt).first(64)).ok());  // warm up
    const auto t0 = std::chrono::steady_clock::now();
    auto r = (*e)->Prefill(prompt);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ASSERT_TRUE(r.ok());
    auto session = DecodeSession::FromPrefill(**e, *r);
    ASSERT_TRUE(session.ok());
    const auto t1 = std::chrono::steady_clock::now();
    auto gen = GenerateGreedy(**session, 5, 16, {});
    const double g = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
    ASSERT_TRUE(gen.ok());
    std::printf("%s: prefill %zu tokens in %.3f s = %.0f tokens/s; decode %.1f tokens/s\n",
                dtype, prompt.size(), s, prompt.size() / s, 16 / g);
  }
}

}  // namespace
}  // namespace kvwire::engine
