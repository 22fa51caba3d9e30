// A node's Prometheus metrics (prometheus-cpp registry; serve it with MetricsServer).
//
// Every family carries the constant label role="prefill"|"decode", so dashboards can tell the
// two kinds of node apart whatever the scrape jobs are called. Names follow Prometheus
// conventions: base units (seconds, bytes) in the name, `_total` on counters.
//
//   kvwire_build_info{version,build_type}               gauge, always 1
//   kvwire_node_info{model,device}                      gauge, always 1
//   kvwire_requests_total{code}                          Generate calls finished, by gRPC code
//                                                        (every code is pre-created at 0)
//   kvwire_requests_in_flight                            calls accepted and not finished
//   kvwire_streams_in_flight                             cache uploads open (sent or received)
//   kvwire_raw_bytes_total{preset}                       full caches at 16 bits per element
//   kvwire_wire_bytes_total{preset}                      kvcodec frame bytes sent / received
//   kvwire_cache_elements_total{preset}                  K and V elements of the full caches
//   kvwire_compression_ratio{preset}                     histogram: raw bytes / wire bytes
//   kvwire_wire_bytes_per_element{preset}                histogram: wire bytes / elements (x8 =
//                                                        bits per element; promtool wants bytes)
//   kvwire_kept_ratio{preset}                            histogram: fraction of elements kept
//   kvwire_stage_duration_seconds{stage}                 histogram; stage = prefill | selection
//                                                        | encode (prefill node), transfer |
//                                                        rebuild | decode (decode node)
//   kvwire_time_to_first_token_seconds                   histogram, request received -> first
//                                                        generated token (prefill node)
//   kvwire_prompt_tokens_total, kvwire_generated_tokens_total
//   kvwire_caches_held, kvwire_caches_held_bytes         KV caches in memory and their bytes
//
// Shadow passes (server/shadow: a sampled request's first tokens decoded again with the full
// cache, after the answer; issue 9):
//   kvwire_shadow_sampled_total{preset}                  requests the prefill node sampled
//   kvwire_shadow_passes_total{preset,outcome}           decode node: done | dropped (queue
//                                                        full, or shutting down) | failed
//   kvwire_shadow_queue_length                           decode node: passes queued or running
//   kvwire_shadow_agreement{preset}                      histogram: per pass, share of steps
//                                                        where both caches' top-1 tokens agree
//   kvwire_shadow_kl_divergence{preset}                  histogram: per pass, mean KL(full ||
//                                                        compressed) of next-token distributions,
//                                                        nats
//   kvwire_shadow_reconstruction_error{preset,tensor}    histogram: per pass, relative error
//                                                        ||x' - x|| / ||x|| of the kept keys
//                                                        (tensor="key") or values ("value")
//   kvwire_shadow_duration_seconds                       histogram: seconds per pass
//
// "compression ratio" here is raw/wire ("times smaller"); seed 000's compression ratio (the
// fraction of the cache removed) is 1 - kvwire_kept_ratio.
//
// Thread-safe: nodes update it from gRPC and worker threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
class Registry;
template <typename T>
class Family;
}  // namespace prometheus

namespace kvwire::metrics {

enum class Stage { kPrefill, kSelection, kEncode, kTransfer, kRebuild, kDecode };
std::string_view StageName(Stage stage);

enum class ShadowOutcome { kDone, kDropped, kFailed };
std::string_view ShadowOutcomeName(ShadowOutcome outcome);

// What one shadow pass measured. Non-finite values (e.g. the relative error of an all-zero
// reference) are not observed.
struct ShadowFigures {
  double agreement = 0;
  double mean_kl = 0;
  double key_error = 0;
  double value_error = 0;
  double seconds = 0;
};

// What one frame carried (the preset label is chosen by the caller; keep it bounded: a preset
// name the node knows, or "custom").
struct FrameFigures {
  uint64_t raw_bytes = 0;
  uint64_t wire_bytes = 0;
  uint64_t elements = 0;
  double kept_ratio = 0;
};

class NodeMetrics {
 public:
  // `role` is "prefill" or "decode".
  explicit NodeMetrics(std::string_view role);
  ~NodeMetrics();
  NodeMetrics(const NodeMetrics&) = delete;
  NodeMetrics& operator=(const NodeMetrics&) = delete;

  const std::string& role() const { return role_; }
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  // Sets kvwire_node_info (replacing an earlier call's labels).
  void SetNodeInfo(std::string_view model_fingerprint, std::string_view device);

  void CountRequest(absl::StatusCode code);
  void ObserveStage(Stage stage, double seconds);
  // Counters always; the ratio histograms only when `with_ratios` (the prefill node records
  // them, the decode node only counts what it received, so sums across nodes do not double).
  void ObserveFrame(std::string_view preset, const FrameFigures& frame, bool with_ratios);
  void ObserveTimeToFirstToken(double seconds);
  void AddTokens(uint64_t prompt_tokens, uint64_t generated_tokens);
  // Shadow passes (preset labels bounded by the caller, as for ObserveFrame). The first count
  // for a preset creates all its outcomes at 0, so ratios are defined before the first drop.
  void CountShadowSampled(std::string_view preset);
  void CountShadowPass(std::string_view preset, ShadowOutcome outcome);
  void ObserveShadow(std::string_view preset, const ShadowFigures& figures);
  // Decode node only (a no-op on a prefill node's metrics).
  void SetShadowQueueLength(int passes);

  // Scoped gauge increments: the gauge goes back down when the object is destroyed (or
  // Release()d). Movable; a moved-from or default-constructed one does nothing.
  class Scoped {
   public:
    Scoped() = default;
    Scoped(Scoped&& other) noexcept;
    Scoped& operator=(Scoped&& other) noexcept;
    ~Scoped() { Release(); }
    void Release();

   private:
    friend class NodeMetrics;
    explicit Scoped(prometheus::Gauge* gauge) : gauge_(gauge) {}
    prometheus::Gauge* gauge_ = nullptr;
  };
  Scoped TrackRequest();
  Scoped TrackStream();

  // A cache held in memory: counts in kvwire_caches_held, its bytes in kvwire_caches_held_bytes
  // (SetBytes may grow or shrink them as layers arrive or are freed).
  class CacheHold {
   public:
    CacheHold() = default;
    CacheHold(CacheHold&& other) noexcept;
    CacheHold& operator=(CacheHold&& other) noexcept;
    ~CacheHold() { Release(); }
    void SetBytes(uint64_t bytes);
    void Release();

   private:
    friend class NodeMetrics;
    explicit CacheHold(NodeMetrics* metrics);
    NodeMetrics* metrics_ = nullptr;
    uint64_t bytes_ = 0;
  };
  CacheHold HoldCache();

 private:
  const std::string role_;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Gauge>* node_info_;
  prometheus::Gauge* node_info_gauge_ = nullptr;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Gauge* requests_in_flight_;
  prometheus::Gauge* streams_in_flight_;
  prometheus::Family<prometheus::Counter>* raw_bytes_;
  prometheus::Family<prometheus::Counter>* wire_bytes_;
  prometheus::Family<prometheus::Counter>* elements_;
  prometheus::Family<prometheus::Histogram>* compression_ratio_;
  prometheus::Family<prometheus::Histogram>* bytes_per_element_;
  prometheus::Family<prometheus::Histogram>* kept_ratio_;
  prometheus::Family<prometheus::Histogram>* stage_seconds_;
  prometheus::Histogram* first_token_seconds_;
  prometheus::Counter* prompt_tokens_;
  prometheus::Counter* generated_tokens_;
  prometheus::Gauge* caches_held_;
  prometheus::Gauge* caches_held_bytes_;
  prometheus::Family<prometheus::Counter>* shadow_sampled_;
  prometheus::Family<prometheus::Counter>* shadow_passes_;
  prometheus::Gauge* shadow_queue_length_ = nullptr;
  prometheus::Family<prometheus::Histogram>* shadow_agreement_;
  prometheus::Family<prometheus::Histogram>* shadow_kl_;
  prometheus::Family<prometheus::Histogram>* shadow_error_;
  prometheus::Histogram* shadow_seconds_ = nullptr;
};

}  // namespace kvwire::metrics
