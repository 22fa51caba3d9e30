// The decode node's shadow passes (issue 9, online part): for the requests the prefill node
// sampled, decode the first N tokens again with the full cache, recomputed from the prompt's
// ids, and record top-1 agreement, mean KL and the reconstruction error by preset
// (metrics::NodeMetrics' kvwire_shadow_* families; one "shadow_done" log line per pass).
//
// Latency bound: a pass never runs on a request's thread and never before the request's
// tokens are all generated. The request itself only hands its (already rebuilt) cache and
// token ids over: Submit() moves them into a bounded queue under a mutex and returns at once,
// O(prompt tokens) copying of ids and nothing else. The passes run one at a time on a single
// worker thread at nice 19, so they compete with requests for CPU only at the lowest priority,
// and a full queue drops the new pass (counted as outcome="dropped") rather than grow or wait.
// Memory: at most queue_capacity + 1 rebuilt caches are held for passes (kvwire_caches_held
// counts them), each released when its pass ends. With a cache budget (the node's, shared with
// its requests) each pass also reserves its rebuilt cache and the full cache it recomputes when
// it is submitted, and a pass that does not fit is dropped like one that finds the queue full.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "server/engine/engine.h"
#include "server/metrics/metrics.h"
#include "server/shadow/dropping_queue.h"
#include "server/shadow/shadow_pass.h"
#include "server/transport/cache_budget.h"

namespace kvwire::shadow {

// What became of one pass (for tests and embedders; the node logs and counts the same).
struct ShadowReport {
  std::string request_id;
  std::string preset;  // the bounded label
  absl::Status status;
  ShadowMeasures measures;
  std::chrono::steady_clock::time_point submitted;
  std::chrono::steady_clock::time_point started;
  std::chrono::steady_clock::time_point finished;
};

struct ShadowOptions {
  // N: generated tokens compared per pass (>= 1).
  int tokens = 16;
  // Passes that may wait while one runs; more are dropped.
  int queue_capacity = 4;
  // The node's cache budget (null: passes are not counted against one).
  std::shared_ptr<transport::CacheBudget> cache_budget;
  // Not owned; may be null.
  metrics::NodeMetrics* metrics = nullptr;
  // Preset names accepted as metric labels besides kvcodec's built-in ones (the node's preset
  // files); any other name is counted as "custom", as the transport does.
  std::set<std::string> preset_names;
  // The worker runs at nice 19 (see DroppingQueue).
  bool low_priority = true;
  // Called on the worker when a pass starts, before any of its work (tests use it to hold the
  // worker and watch the queue fill); may block.
  std::function<void(const std::string& request_id)> on_pass_start;
  // Called on the worker when a pass has been counted and logged.
  std::function<void(const ShadowReport&)> on_pass_done;
};

class ShadowRunner {
 public:
  // `engine` is not owned and must outlive the runner.
  ShadowRunner(const engine::Engine& engine, ShadowOptions options);
  // Drops the passes still waiting (counted), finishes the running one.
  ~ShadowRunner();
  ShadowRunner(const ShadowRunner&) = delete;
  ShadowRunner& operator=(const ShadowRunner&) = delete;

  int tokens() const { return options_.tokens; }

  // Queues a pass and returns true, or drops it (counted, logged at debug level) and returns
  // false when the queue is full or the cache budget has no room for it. Never waits for a pass.
  bool Submit(ShadowInput input);
  // Blocks until no pass is waiting or running.
  void WaitIdle();
  // The metric label a preset name gets.
  std::string PresetLabel(const std::string& name) const;

 private:
  struct Pass;
  void Run(Pass& pass);
  void Dropped(const Pass& pass, const char* why);
  void UpdateQueueLength();

  const engine::Engine& engine_;
  const ShadowOptions options_;
  DroppingQueue queue_;  // last: stopped first, while the rest is still alive
};

}  // namespace kvwire::shadow
