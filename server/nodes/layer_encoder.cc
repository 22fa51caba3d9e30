#include "server/nodes/layer_encoder.h"

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"

namespace kvwire::nodes {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

bool NeedsScores(kvcodec::SelectionMethod method) {
  switch (method) {
    case kvcodec::SelectionMethod::kKeepAll:
    case kvcodec::SelectionMethod::kStreamingLLM:
    case kvcodec::SelectionMethod::kRandom:
      return false;
    default:
      return true;
  }
}

}  // namespace

const std::vector<float>* LayerScoresFor(const kvcodec::SelectionConfig& selection,
                                         const engine::PrefillLayer& layer) {
  switch (selection.method) {
    case kvcodec::SelectionMethod::kSnapKV:
    case kvcodec::SelectionMethod::kAnchorRule:
      return &layer.window_scores;
    case kvcodec::SelectionMethod::kQ2C:
      return &layer.question_scores;
    case kvcodec::SelectionMethod::kH2O:
      return &layer.accumulated_scores;
    default:
      return nullptr;
  }
}

absl::StatusOr<std::unique_ptr<LayerEncoder>> LayerEncoder::Start(
    const kvcodec::CacheShape& shape, const kvcodec::CodecConfig& config,
    const std::string& model_fingerprint, std::span<const int32_t> positions,
    std::span<const int32_t> token_ids, Sink sink) {
  std::unique_ptr<LayerEncoder> enc(new LayerEncoder());
  enc->shape_ = shape;
  enc->selection_ = config.selection;
  enc->token_ids_ = token_ids;
  enc->sink_ = std::move(sink);
  auto encoder = kvcodec::FrameEncoder::Create(shape, config, model_fingerprint, positions);
  if (!encoder.ok()) return encoder.status();
  enc->encoder_ = *std::move(encoder);
  enc->views_.resize(shape.num_layers);
  if (NeedsScores(config.selection.method)) {
    enc->budgets_ = kvcodec::LayerBudgets(config.selection, shape);
    enc->kept_.resize(shape.num_layers);
  } else {
    auto all = kvcodec::Select(config.selection, shape, nullptr, token_ids);
    if (!all.ok()) return all.status();
    enc->kept_ = std::move(all->kept);
  }
  if (!enc->Emit(enc->encoder_->Header())) return absl::CancelledError("upload ended");
  enc->thread_ = std::thread([e = enc.get()] { e->Run(); });
  return enc;
}

LayerEncoder::~LayerEncoder() {
  if (thread_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closing_ = true;
      queue_.clear();
      if (error_.ok()) error_ = absl::CancelledError("encoder stopped");
    }
    cv_.notify_all();
    thread_.join();
  }
}

bool LayerEncoder::Emit(std::vector<uint8_t> bytes) {
  frame_bytes_ += bytes.size();
  return sink_(std::move(bytes));
}

absl::Status LayerEncoder::OnLayer(const engine::PrefillLayer& layer) {
  Pending pending{layer.layer, {layer.keys.data(), layer.values.data()}, {}};
  if (NeedsScores(selection_.method)) {
    const std::vector<float>* scores = LayerScoresFor(selection_, layer);
    if (scores == nullptr || scores->empty()) {
      return absl::InternalError(absl::StrCat("layer ", layer.layer, " came without the scores ",
                                              "its selection rule needs"));
    }
    pending.scores = *scores;
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (!error_.ok()) return error_;
  queue_.push_back(std::move(pending));
  cv_.notify_all();
  return absl::OkStatus();
}

void LayerEncoder::Run() {
  for (;;) {
    Pending pending;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return closing_ || !queue_.empty(); });
      if (queue_.empty() || !error_.ok()) return;
      pending = std::move(queue_.front());
      queue_.pop_front();
    }
    absl::Status s = EncodeLayer(pending);
    if (!s.ok()) {
      std::lock_guard<std::mutex> lock(mu_);
      if (error_.ok()) error_ = s;
      queue_.clear();
      return;
    }
  }
}

absl::Status LayerEncoder::EncodeLayer(Pending& pending) {
  const int l = pending.layer;
  if (l < 0 || l >= shape_.num_layers || (l > 0 && views_[l - 1].keys == nullptr)) {
    return absl::InternalError(absl::StrCat("layer ", l, " arrived out of order"));
  }
  const Clock::time_point start = Clock::now();
  views_[l] = pending.view;
  if (NeedsScores(selection_.method)) {
    // Layer l alone, with the budget it has in the whole cache.
    kvcodec::SelectionConfig one = selection_;
    one.pyramid = false;
    one.budget_tokens = budgets_[l];
    kvcodec::CacheShape layer_shape = shape_;
    layer_shape.num_layers = 1;
    kvcodec::ImportanceScores scores{.num_layers = 1,
                                     .num_kv_heads = shape_.num_kv_heads,
                                     .num_tokens = shape_.num_tokens,
                                     .values = std::move(pending.scores)};
    auto kept = kvcodec::Select(one, layer_shape, &scores, token_ids_);
    if (!kept.ok()) return kept.status();
    kept_[l] = std::move(kept->kept[0]);
  }
  selection_seconds_ += SecondsSince(start);
  while (next_chunk_ < encoder_->num_chunks()) {
    const auto [first, count] = encoder_->chunk_layers(next_chunk_);
    if (first + count - 1 > l) break;  // the chunk's last layer is still being computed
    auto bytes = encoder_->EncodeChunk(
        next_chunk_, std::span(views_).subspan(first, count),
        std::span<const std::vector<std::vector<int32_t>>>(kept_).subspan(first, count));
    if (!bytes.ok()) return bytes.status();
    ++next_chunk_;
    if (!Emit(*std::move(bytes))) return absl::CancelledError("the upload ended early");
  }
  encode_seconds_ += SecondsSince(start);
  return absl::OkStatus();
}

absl::Status LayerEncoder::Finish() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closing_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (!error_.ok()) return error_;
  if (next_chunk_ != encoder_->num_chunks()) {
    return absl::InternalError(absl::StrCat("only ", next_chunk_, " of ", encoder_->num_chunks(),
                                            " frame chunks were encoded"));
  }
  if (!Emit(encoder_->Trailer())) return absl::CancelledError("the upload ended early");
  return absl::OkStatus();
}

const kvcodec::ByteAccounting& LayerEncoder::accounting() const { return encoder_->accounting(); }

}  // namespace kvwire::nodes
