#include "server/shadow/shadow_runner.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kvcodec/kvcodec.h"
#include "nlohmann/json.hpp"
#include "server/metrics/log.h"

namespace kvwire::shadow {
namespace {

using Clock = std::chrono::steady_clock;

uint64_t LayerBytes(const std::vector<kvcodec::DecodedLayer>& layers) {
  uint64_t n = 0;
  for (const kvcodec::DecodedLayer& layer : layers) {
    for (const kvcodec::ByteBuffer& b : layer.keys) n += b.size();
    for (const kvcodec::ByteBuffer& b : layer.values) n += b.size();
  }
  return n;
}

}  // namespace

struct ShadowRunner::Pass {
  ShadowInput input;
  std::string preset;
  Clock::time_point submitted;
  std::optional<metrics::NodeMetrics::CacheHold> hold;
  transport::CacheReservation reservation;
};

ShadowRunner::ShadowRunner(const engine::Engine& engine, ShadowOptions options)
    : engine_(engine),
      options_(std::move(options)),
      queue_(options_.queue_capacity, options_.low_priority) {}

ShadowRunner::~ShadowRunner() = default;

std::string ShadowRunner::PresetLabel(const std::string& name) const {
  if (name.empty()) return "custom";
  if (options_.preset_names.count(name) > 0) return name;
  for (const std::string& builtin : kvcodec::PresetNames()) {
    if (builtin == name) return name;
  }
  return "custom";
}

bool ShadowRunner::Submit(ShadowInput input) {
  auto pass = std::make_shared<Pass>();
  pass->preset = PresetLabel(input.preset);
  pass->submitted = Clock::now();
  // The rebuilt cache it holds, and the full one MeasureShadow recomputes from the prompt.
  const uint64_t bytes = LayerBytes(input.layers) +
                         input.shape.num_elements() * kvcodec::DTypeSize(engine_.cache_dtype());
  if (!transport::CacheReservation::Make(options_.cache_budget.get(), bytes, &pass->reservation).ok()) {
    pass->input.request_id = input.request_id;
    Dropped(*pass, "cache budget full");
    return false;
  }
  if (options_.metrics != nullptr) {
    pass->hold.emplace(options_.metrics->HoldCache());
    pass->hold->SetBytes(LayerBytes(input.layers));
  }
  pass->input = std::move(input);
  const bool queued = queue_.TryPush([this, pass](bool run) {
    if (run) {
      Run(*pass);
    } else {
      Dropped(*pass, "node stopping");
    }
  });
  if (!queued) Dropped(*pass, "queue full");
  UpdateQueueLength();
  return queued;
}

void ShadowRunner::WaitIdle() { queue_.WaitIdle(); }

void ShadowRunner::UpdateQueueLength() {
  if (options_.metrics != nullptr) options_.metrics->SetShadowQueueLength(queue_.pending());
}

void ShadowRunner::Dropped(const Pass& pass, const char* why) {
  if (options_.metrics != nullptr) {
    options_.metrics->CountShadowPass(pass.preset, metrics::ShadowOutcome::kDropped);
  }
  metrics::LogEvent(metrics::LogLevel::kDebug, "shadow_dropped",
                    {{"role", "decode"},
                     {"request_id", pass.input.request_id},
                     {"preset", pass.preset},
                     {"reason", why}});
}

void ShadowRunner::Run(Pass& pass) {
  ShadowReport report{.request_id = pass.input.request_id,
                      .preset = pass.preset,
                      .submitted = pass.submitted,
                      .started = Clock::now()};
  if (options_.on_pass_start) options_.on_pass_start(report.request_id);
  auto measured = MeasureShadow(engine_, pass.input, options_.tokens);
  report.finished = Clock::now();
  // The rebuilt cache is no longer needed.
  pass.input.layers.clear();
  pass.input.layers.shrink_to_fit();
  pass.hold.reset();
  pass.reservation.Reset();
  const double seconds = std::chrono::duration<double>(report.finished - report.started).count();
  nlohmann::json fields = {{"role", "decode"},
                           {"request_id", report.request_id},
                           {"preset", report.preset},
                           {"seconds", seconds},
                           {"queued_seconds",
                            std::chrono::duration<double>(report.started - report.submitted).count()}};
  if (measured.ok()) {
    report.measures = *std::move(measured);
    const ShadowMeasures& m = report.measures;
    const metrics::ShadowFigures figures{.agreement = m.fidelity.agreement(),
                                         .mean_kl = m.fidelity.mean_kl(),
                                         .key_error = m.keys.relative(),
                                         .value_error = m.values.relative(),
                                         .seconds = seconds};
    if (options_.metrics != nullptr) {
      options_.metrics->ObserveShadow(report.preset, figures);
      options_.metrics->CountShadowPass(report.preset, metrics::ShadowOutcome::kDone);
    }
    fields.update({{"steps", m.fidelity.steps},
                   {"agreement", figures.agreement},
                   {"mean_kl", figures.mean_kl},
                   {"key_error", figures.key_error},
                   {"value_error", figures.value_error}});
    metrics::LogEvent(metrics::LogLevel::kInfo, "shadow_done", fields);
  } else {
    report.status = measured.status();
    if (options_.metrics != nullptr) {
      options_.metrics->CountShadowPass(report.preset, metrics::ShadowOutcome::kFailed);
    }
    fields["code"] = absl::StatusCodeToString(report.status.code());
    fields["message"] = report.status.message();
    metrics::LogEvent(metrics::LogLevel::kWarning, "shadow_failed", fields);
  }
  if (options_.on_pass_done) options_.on_pass_done(report);
  // This pass still counts as running until the worker returns; the gauge says what waits.
  if (options_.metrics != nullptr) {
    options_.metrics->SetShadowQueueLength(std::max(0, queue_.pending() - 1));
  }
}

}  // namespace kvwire::shadow
