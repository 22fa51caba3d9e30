#include "server/metrics/metrics.h"

#include <cmath>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

#ifndef KVWIRE_VERSION
#define KVWIRE_VERSION "unknown"
#endif
#ifndef KVWIRE_BUILD_TYPE
#define KVWIRE_BUILD_TYPE "unknown"
#endif

namespace kvwire::metrics {
namespace {

using prometheus::Histogram;

// Stage latencies range from sub-millisecond (rebuilding a tiny cache) to minutes (prefilling a
// long prompt on a CPU).
const Histogram::BucketBoundaries& SecondsBuckets() {
  static const Histogram::BucketBoundaries b = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                0.1,    0.25,  0.5,    1,     2.5,  5,     10,
                                                25,     60,    120,    300};
  return b;
}
// raw/wire: 0.5 for a lossless float32 cache, 1 for bf16, up to ~64x.
const Histogram::BucketBoundaries& RatioBuckets() {
  static const Histogram::BucketBoundaries b = {0.5, 1, 1.5, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 64};
  return b;
}
// Bytes per element: 1/8 of bits per element; 2 = raw bf16 and 4 = raw float32, each with a
// bucket a little above for framing.
const Histogram::BucketBoundaries& BytesPerElementBuckets() {
  static const Histogram::BucketBoundaries b = {0.03125, 0.0625, 0.125, 0.1875, 0.25, 0.3125,
                                                0.375,   0.4375, 0.5,   0.625,  0.75, 1,
                                                1.25,    1.5,    2,     2.125,  3,    4,    4.25};
  return b;
}
const Histogram::BucketBoundaries& KeptBuckets() {
  static const Histogram::BucketBoundaries b = {0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4,
                                                0.5,  0.6, 0.7,  0.8, 0.9,  0.99, 1};
  return b;
}

// Per-request agreement is a multiple of 1/steps (16 by default); 1 = identical choices.
const Histogram::BucketBoundaries& AgreementBuckets() {
  static const Histogram::BucketBoundaries b = {0.5, 0.6, 0.7, 0.75, 0.8,  0.85,
                                                0.9, 0.95, 0.98, 0.99, 1};
  return b;
}
// Mean KL in nats: ~1e-8 for INT8 up to ~1 for INT2 on a trained model; lossless is exactly 0.
const Histogram::BucketBoundaries& KlBuckets() {
  static const Histogram::BucketBoundaries b = {1e-6, 1e-5, 1e-4, 1e-3, 0.003, 0.01,
                                                0.03, 0.1,  0.3,  1,    3};
  return b;
}
// Relative reconstruction error: ~0.004 for INT8, ~0.1 for INT4, ~0.4 for INT2.
const Histogram::BucketBoundaries& ErrorBuckets() {
  static const Histogram::BucketBoundaries b = {1e-4, 1e-3, 0.003, 0.01, 0.02, 0.05,
                                                0.1,  0.2,  0.3,   0.5,  1};
  return b;
}

constexpr ShadowOutcome kAllShadowOutcomes[] = {ShadowOutcome::kDone, ShadowOutcome::kDropped,
                                                ShadowOutcome::kFailed};

constexpr absl::StatusCode kAllCodes[] = {
    absl::StatusCode::kOk,
    absl::StatusCode::kCancelled,
    absl::StatusCode::kUnknown,
    absl::StatusCode::kInvalidArgument,
    absl::StatusCode::kDeadlineExceeded,
    absl::StatusCode::kNotFound,
    absl::StatusCode::kAlreadyExists,
    absl::StatusCode::kPermissionDenied,
    absl::StatusCode::kResourceExhausted,
    absl::StatusCode::kFailedPrecondition,
    absl::StatusCode::kAborted,
    absl::StatusCode::kOutOfRange,
    absl::StatusCode::kUnimplemented,
    absl::StatusCode::kInternal,
    absl::StatusCode::kUnavailable,
    absl::StatusCode::kDataLoss,
    absl::StatusCode::kUnauthenticated,
};

// absl's names are gRPC's ("OK", "INVALID_ARGUMENT", ...): the codes are numerically equal.
std::string CodeName(absl::StatusCode code) { return absl::StatusCodeToString(code); }

}  // namespace

std::string_view StageName(Stage stage) {
  switch (stage) {
    case Stage::kPrefill: return "prefill";
    case Stage::kSelection: return "selection";
    case Stage::kEncode: return "encode";
    case Stage::kTransfer: return "transfer";
    case Stage::kRebuild: return "rebuild";
    case Stage::kDecode: return "decode";
  }
  return "unknown";
}

std::string_view ShadowOutcomeName(ShadowOutcome outcome) {
  switch (outcome) {
    case ShadowOutcome::kDone: return "done";
    case ShadowOutcome::kDropped: return "dropped";
    case ShadowOutcome::kFailed: return "failed";
  }
  return "unknown";
}

NodeMetrics::NodeMetrics(std::string_view role)
    : role_(role), registry_(std::make_shared<prometheus::Registry>()) {
  const prometheus::Labels base = {{"role", role_}};
  prometheus::Registry& r = *registry_;
  prometheus::BuildGauge()
      .Name("kvwire_build_info")
      .Help("kvwire version and build type of this binary (value always 1)")
      .Labels(base)
      .Register(r)
      .Add({{"version", KVWIRE_VERSION}, {"build_type", KVWIRE_BUILD_TYPE}})
      .Set(1);
  node_info_ = &prometheus::BuildGauge()
                    .Name("kvwire_node_info")
                    .Help("Model fingerprint and engine device this node serves (value always 1)")
                    .Labels(base)
                    .Register(r);
  requests_ = &prometheus::BuildCounter()
                   .Name("kvwire_requests_total")
                   .Help("Generate calls finished, by gRPC status code")
                   .Labels(base)
                   .Register(r);
  // Every code exists from the start, so error ratios are defined before the first error.
  for (absl::StatusCode code : kAllCodes) requests_->Add({{"code", CodeName(code)}});
  requests_in_flight_ = &prometheus::BuildGauge()
                             .Name("kvwire_requests_in_flight")
                             .Help("Generate calls accepted and not yet finished (queued included)")
                             .Labels(base)
                             .Register(r)
                             .Add({});
  streams_in_flight_ = &prometheus::BuildGauge()
                            .Name("kvwire_streams_in_flight")
                            .Help("KV-cache upload streams open: sending (prefill) or receiving (decode)")
                            .Labels(base)
                            .Register(r)
                            .Add({});
  raw_bytes_ = &prometheus::BuildCounter()
                    .Name("kvwire_raw_bytes_total")
                    .Help("Bytes of the full KV caches at 16 bits per element (what a naive transfer sends)")
                    .Labels(base)
                    .Register(r);
  wire_bytes_ = &prometheus::BuildCounter()
                     .Name("kvwire_wire_bytes_total")
                     .Help("Bytes of the kvcodec frames actually sent (prefill) or received (decode)")
                     .Labels(base)
                     .Register(r);
  elements_ = &prometheus::BuildCounter()
                   .Name("kvwire_cache_elements_total")
                   .Help("K and V elements of the full KV caches (bits per element = 8 * wire bytes / elements)")
                   .Labels(base)
                   .Register(r);
  compression_ratio_ = &prometheus::BuildHistogram()
                            .Name("kvwire_compression_ratio")
                            .Help("Per frame: raw bytes / wire bytes (how many times smaller)")
                            .Labels(base)
                            .Register(r);
  // Prometheus names carry base units, so bytes rather than bits (dashboards multiply by 8).
  bytes_per_element_ = &prometheus::BuildHistogram()
                            .Name("kvwire_wire_bytes_per_element")
                            .Help("Per frame: wire bytes / K and V elements of the full cache (x8 = bits per element)")
                           .Labels(base)
                           .Register(r);
  kept_ratio_ = &prometheus::BuildHistogram()
                     .Name("kvwire_kept_ratio")
                     .Help("Per frame: fraction of the cache's K and V elements that selection kept")
                     .Labels(base)
                     .Register(r);
  stage_seconds_ = &prometheus::BuildHistogram()
                        .Name("kvwire_stage_duration_seconds")
                        .Help("Seconds per request spent in each stage")
                        .Labels(base)
                        .Register(r);
  const bool prefill = role_ == "prefill";
  const std::vector<Stage> stages =
      prefill ? std::vector<Stage>{Stage::kPrefill, Stage::kSelection, Stage::kEncode}
              : std::vector<Stage>{Stage::kTransfer, Stage::kRebuild, Stage::kDecode};
  for (Stage s : stages) stage_seconds_->Add({{"stage", std::string(StageName(s))}}, SecondsBuckets());
  first_token_seconds_ = &prometheus::BuildHistogram()
                              .Name("kvwire_time_to_first_token_seconds")
                              .Help("Seconds from the prefill node receiving a request to the first generated token")
                              .Labels(base)
                              .Register(r)
                              .Add({}, SecondsBuckets());
  prompt_tokens_ = &prometheus::BuildCounter()
                        .Name("kvwire_prompt_tokens_total")
                        .Help("Prompt tokens of the requests served")
                        .Labels(base)
                        .Register(r)
                        .Add({});
  generated_tokens_ = &prometheus::BuildCounter()
                           .Name("kvwire_generated_tokens_total")
                           .Help("Tokens generated")
                           .Labels(base)
                           .Register(r)
                           .Add({});
  caches_held_ = &prometheus::BuildGauge()
                      .Name("kvwire_caches_held")
                      .Help("KV caches held in memory (being prefilled/encoded, or received/decoded from)")
                      .Labels(base)
                      .Register(r)
                      .Add({});
  caches_held_bytes_ = &prometheus::BuildGauge()
                            .Name("kvwire_caches_held_bytes")
                            .Help("Bytes of the KV caches held in memory")
                            .Labels(base)
                            .Register(r)
                            .Add({});
  shadow_sampled_ = &prometheus::BuildCounter()
                         .Name("kvwire_shadow_sampled_total")
                         .Help("Requests sampled for a shadow pass (full-cache fidelity check)")
                         .Labels(base)
                         .Register(r);
  shadow_passes_ = &prometheus::BuildCounter()
                        .Name("kvwire_shadow_passes_total")
                        .Help("Shadow passes by outcome: done, dropped (queue full or stopping), failed")
                        .Labels(base)
                        .Register(r);
  shadow_agreement_ = &prometheus::BuildHistogram()
                           .Name("kvwire_shadow_agreement")
                           .Help("Per shadow pass: share of steps where the compressed and the full cache pick the same top-1 token")
                           .Labels(base)
                           .Register(r);
  shadow_kl_ = &prometheus::BuildHistogram()
                    .Name("kvwire_shadow_kl_divergence")
                    .Help("Per shadow pass: mean KL(full || compressed) of the next-token distributions, in nats")
                    .Labels(base)
                    .Register(r);
  shadow_error_ = &prometheus::BuildHistogram()
                       .Name("kvwire_shadow_reconstruction_error")
                       .Help("Per shadow pass: relative error of the kept keys or values against the full cache")
                       .Labels(base)
                       .Register(r);
  if (!prefill) {
    shadow_queue_length_ = &prometheus::BuildGauge()
                                .Name("kvwire_shadow_queue_length")
                                .Help("Shadow passes queued or running")
                                .Labels(base)
                                .Register(r)
                                .Add({});
    shadow_seconds_ = &prometheus::BuildHistogram()
                           .Name("kvwire_shadow_duration_seconds")
                           .Help("Seconds per shadow pass (full-cache prefill and both teacher-forced decodes)")
                           .Labels(base)
                           .Register(r)
                           .Add({}, SecondsBuckets());
  }
}

NodeMetrics::~NodeMetrics() = default;

void NodeMetrics::SetNodeInfo(std::string_view model_fingerprint, std::string_view device) {
  if (node_info_gauge_ != nullptr) node_info_->Remove(node_info_gauge_);
  node_info_gauge_ =
      &node_info_->Add({{"model", std::string(model_fingerprint)}, {"device", std::string(device)}});
  node_info_gauge_->Set(1);
}

void NodeMetrics::CountRequest(absl::StatusCode code) {
  requests_->Add({{"code", CodeName(code)}}).Increment();
}

void NodeMetrics::ObserveStage(Stage stage, double seconds) {
  stage_seconds_->Add({{"stage", std::string(StageName(stage))}}, SecondsBuckets()).Observe(seconds);
}

void NodeMetrics::ObserveFrame(std::string_view preset_name, const FrameFigures& frame,
                               bool with_ratios) {
  const prometheus::Labels preset = {{"preset", std::string(preset_name)}};
  raw_bytes_->Add(preset).Increment(static_cast<double>(frame.raw_bytes));
  wire_bytes_->Add(preset).Increment(static_cast<double>(frame.wire_bytes));
  elements_->Add(preset).Increment(static_cast<double>(frame.elements));
  if (!with_ratios) return;
  if (frame.wire_bytes > 0) {
    compression_ratio_->Add(preset, RatioBuckets())
        .Observe(static_cast<double>(frame.raw_bytes) / static_cast<double>(frame.wire_bytes));
  }
  if (frame.elements > 0) {
    bytes_per_element_->Add(preset, BytesPerElementBuckets())
        .Observe(static_cast<double>(frame.wire_bytes) / static_cast<double>(frame.elements));
  }
  kept_ratio_->Add(preset, KeptBuckets()).Observe(frame.kept_ratio);
}

void NodeMetrics::ObserveTimeToFirstToken(double seconds) { first_token_seconds_->Observe(seconds); }

void NodeMetrics::AddTokens(uint64_t prompt_tokens, uint64_t generated_tokens) {
  prompt_tokens_->Increment(static_cast<double>(prompt_tokens));
  generated_tokens_->Increment(static_cast<double>(generated_tokens));
}

void NodeMetrics::CountShadowSampled(std::string_view preset) {
  shadow_sampled_->Add({{"preset", std::string(preset)}}).Increment();
}

void NodeMetrics::CountShadowPass(std::string_view preset, ShadowOutcome outcome) {
  for (ShadowOutcome o : kAllShadowOutcomes) {
    prometheus::Counter& c = shadow_passes_->Add(
        {{"preset", std::string(preset)}, {"outcome", std::string(ShadowOutcomeName(o))}});
    if (o == outcome) c.Increment();
  }
}

void NodeMetrics::ObserveShadow(std::string_view preset_name, const ShadowFigures& f) {
  const std::string preset(preset_name);
  auto observe = [](prometheus::Histogram& h, double v) {
    if (std::isfinite(v)) h.Observe(v);
  };
  observe(shadow_agreement_->Add({{"preset", preset}}, AgreementBuckets()), f.agreement);
  observe(shadow_kl_->Add({{"preset", preset}}, KlBuckets()), f.mean_kl);
  observe(shadow_error_->Add({{"preset", preset}, {"tensor", "key"}}, ErrorBuckets()), f.key_error);
  observe(shadow_error_->Add({{"preset", preset}, {"tensor", "value"}}, ErrorBuckets()),
          f.value_error);
  if (shadow_seconds_ != nullptr) observe(*shadow_seconds_, f.seconds);
}

void NodeMetrics::SetShadowQueueLength(int passes) {
  if (shadow_queue_length_ != nullptr) shadow_queue_length_->Set(passes);
}

NodeMetrics::Scoped::Scoped(Scoped&& other) noexcept : gauge_(std::exchange(other.gauge_, nullptr)) {}

NodeMetrics::Scoped& NodeMetrics::Scoped::operator=(Scoped&& other) noexcept {
  if (this != &other) {
    Release();
    gauge_ = std::exchange(other.gauge_, nullptr);
  }
  return *this;
}

void NodeMetrics::Scoped::Release() {
  if (gauge_ != nullptr) std::exchange(gauge_, nullptr)->Decrement();
}

NodeMetrics::Scoped NodeMetrics::TrackRequest() {
  requests_in_flight_->Increment();
  return Scoped(requests_in_flight_);
}

NodeMetrics::Scoped NodeMetrics::TrackStream() {
  streams_in_flight_->Increment();
  return Scoped(streams_in_flight_);
}

NodeMetrics::CacheHold::CacheHold(NodeMetrics* metrics) : metrics_(metrics) {
  metrics_->caches_held_->Increment();
}

NodeMetrics::CacheHold::CacheHold(CacheHold&& other) noexcept
    : metrics_(std::exchange(other.metrics_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

NodeMetrics::CacheHold& NodeMetrics::CacheHold::operator=(CacheHold&& other) noexcept {
  if (this != &other) {
    Release();
    metrics_ = std::exchange(other.metrics_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

void NodeMetrics::CacheHold::SetBytes(uint64_t bytes) {
  if (metrics_ == nullptr) return;
  metrics_->caches_held_bytes_->Increment(static_cast<double>(bytes) - static_cast<double>(bytes_));
  bytes_ = bytes;
}

void NodeMetrics::CacheHold::Release() {
  if (metrics_ == nullptr) return;
  SetBytes(0);
  metrics_->caches_held_->Decrement();
  metrics_ = nullptr;
}

NodeMetrics::CacheHold NodeMetrics::HoldCache() { return CacheHold(this); }

}  // namespace kvwire::metrics
