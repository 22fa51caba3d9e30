// NodeMetrics through a live MetricsServer: what a scrape shows, and promtool's lint of it.
#include "server/metrics/metrics.h"

#include <cmath>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "server/metrics/metrics_server.h"
#include "server/metrics/testing/scrape.h"

namespace kvwire::metrics {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::HttpGet;
using testing::ParseSamples;
using testing::PromtoolCheckMetrics;

TEST(MetricsTest, ScrapeShowsWhatWasRecordedAndPassesPromtool) {
  NodeMetrics m("prefill");
  m.SetNodeInfo("qwen2-0123", "cpu");
  m.CountRequest(absl::StatusCode::kOk);
  m.CountRequest(absl::StatusCode::kOk);
  m.CountRequest(absl::StatusCode::kInvalidArgument);
  m.ObserveStage(Stage::kPrefill, 0.2);
  m.ObserveStage(Stage::kEncode, 0.003);
  m.ObserveFrame("int4-rans", {.raw_bytes = 4000, .wire_bytes = 1000, .elements = 2000, .kept_ratio = 1},
                 /*with_ratios=*/true);
  m.ObserveFrame("int4-rans", {.raw_bytes = 4000, .wire_bytes = 500, .elements = 2000, .kept_ratio = 0.25},
                 true);
  m.ObserveTimeToFirstToken(0.7);
  m.AddTokens(10, 3);
  NodeMetrics::Scoped request = m.TrackRequest();
  NodeMetrics::Scoped stream = m.TrackStream();
  NodeMetrics::CacheHold hold = m.HoldCache();
  hold.SetBytes(1 << 20);

  auto server = MetricsServer::Start("127.0.0.1", 0, m.registry());
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->port(), 0);
  EXPECT_EQ((*server)->address(), "127.0.0.1:" + std::to_string((*server)->port()));
  auto text = HttpGet("127.0.0.1", (*server)->port(), "/metrics");
  ASSERT_TRUE(text.ok()) << text.status();

  const auto s = ParseSamples(*text);
  auto at = [&](const std::string& key) {
    auto it = s.find(key);
    return it == s.end() ? std::nan("") : it->second;
  };
  EXPECT_EQ(at(R"(kvwire_requests_total{code="OK",role="prefill"})"), 2);
  EXPECT_EQ(at(R"(kvwire_requests_total{code="INVALID_ARGUMENT",role="prefill"})"), 1);
  EXPECT_EQ(at(R"(kvwire_requests_total{code="DATA_LOSS",role="prefill"})"), 0);  // pre-created
  EXPECT_EQ(at(R"(kvwire_raw_bytes_total{preset="int4-rans",role="prefill"})"), 8000);
  EXPECT_EQ(at(R"(kvwire_wire_bytes_total{preset="int4-rans",role="prefill"})"), 1500);
  EXPECT_EQ(at(R"(kvwire_cache_elements_total{preset="int4-rans",role="prefill"})"), 4000);
  // Ratios 4 and 8; bytes per element 0.5 and 0.25 (4 and 2 bits); kept 1 and 0.25.
  EXPECT_EQ(at(R"(kvwire_compression_ratio_sum{preset="int4-rans",role="prefill"})"), 12);
  EXPECT_EQ(at(R"(kvwire_compression_ratio_bucket{le="4",preset="int4-rans",role="prefill"})"), 1);
  EXPECT_EQ(at(R"(kvwire_wire_bytes_per_element_sum{preset="int4-rans",role="prefill"})"), 0.75);
  EXPECT_EQ(at(R"(kvwire_kept_ratio_count{preset="int4-rans",role="prefill"})"), 2);
  EXPECT_EQ(at(R"(kvwire_kept_ratio_bucket{le="0.25",preset="int4-rans",role="prefill"})"), 1);
  EXPECT_EQ(at(R"(kvwire_stage_duration_seconds_count{role="prefill",stage="prefill"})"), 1);
  EXPECT_EQ(at(R"(kvwire_stage_duration_seconds_count{role="prefill",stage="selection"})"), 0);
  EXPECT_DOUBLE_EQ(at(R"(kvwire_stage_duration_seconds_sum{role="prefill",stage="encode"})"), 0.003);
  EXPECT_DOUBLE_EQ(at(R"(kvwire_time_to_first_token_seconds_sum{role="prefill"})"), 0.7);
  EXPECT_EQ(at(R"(kvwire_prompt_tokens_total{role="prefill"})"), 10);
  EXPECT_EQ(at(R"(kvwire_generated_tokens_total{role="prefill"})"), 3);
  EXPECT_EQ(at(R"(kvwire_requests_in_flight{role="prefill"})"), 1);
  EXPECT_EQ(at(R"(kvwire_streams_in_flight{role="prefill"})"), 1);
  EXPECT_EQ(at(R"(kvwire_caches_held{role="prefill"})"), 1);
  EXPECT_EQ(at(R"(kvwire_caches_held_bytes{role="prefill"})"), 1 << 20);
  EXPECT_EQ(at(R"(kvwire_node_info{device="cpu",model="qwen2-0123",role="prefill"})"), 1);
  EXPECT_THAT(*text, HasSubstr(R"(kvwire_build_info{role="prefill",build_type=)"));
  EXPECT_THAT(*text, HasSubstr("# TYPE kvwire_stage_duration_seconds histogram"));
  EXPECT_THAT(*text, HasSubstr("# TYPE kvwire_requests_total counter"));

  absl::Status lint = PromtoolCheckMetrics(*text);
  EXPECT_TRUE(lint.ok()) << lint;

  // Gauges go back down when the scoped objects go.
  request.Release();
  NodeMetrics::Scoped moved = std::move(stream);
  stream.Release();  // moved-from: no effect
  hold.SetBytes(10);
  auto again = HttpGet("127.0.0.1", (*server)->port(), "/metrics");
  ASSERT_TRUE(again.ok()) << again.status();
  const auto s2 = ParseSamples(*again);
  EXPECT_EQ(s2.at(R"(kvwire_requests_in_flight{role="prefill"})"), 0);
  EXPECT_EQ(s2.at(R"(kvwire_streams_in_flight{role="prefill"})"), 1);
  EXPECT_EQ(s2.at(R"(kvwire_caches_held_bytes{role="prefill"})"), 10);
  moved.Release();
  hold.Release();
  hold.Release();
  auto third = HttpGet("127.0.0.1", (*server)->port(), "/metrics");
  ASSERT_TRUE(third.ok());
  const auto s3 = ParseSamples(*third);
  EXPECT_EQ(s3.at(R"(kvwire_streams_in_flight{role="prefill"})"), 0);
  EXPECT_EQ(s3.at(R"(kvwire_caches_held{role="prefill"})"), 0);
  EXPECT_EQ(s3.at(R"(kvwire_caches_held_bytes{role="prefill"})"), 0);
}

TEST(MetricsTest, DecodeRoleHasItsOwnStagesAndNoRatiosWhenAsked) {
  NodeMetrics m("decode");
  m.ObserveFrame("custom", {.raw_bytes = 100, .wire_bytes = 50, .elements = 50, .kept_ratio = 1},
                 /*with_ratios=*/false);
  auto server = MetricsServer::Start("localhost", 0, m.registry());
  ASSERT_TRUE(server.ok()) << server.status();
  auto text = HttpGet("127.0.0.1", (*server)->port(), "/metrics");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_THAT(*text, HasSubstr(R"(kvwire_stage_duration_seconds_count{role="decode",stage="rebuild"} 0)"));
  EXPECT_THAT(*text, Not(HasSubstr(R"(stage="prefill")")));
  EXPECT_THAT(*text, HasSubstr(R"(kvwire_wire_bytes_total{role="decode",preset="custom"} 50)"));
  EXPECT_THAT(*text, Not(HasSubstr(R"(kvwire_compression_ratio_count{preset="custom")")));
  EXPECT_TRUE(PromtoolCheckMetrics(*text).ok());
}

TEST(MetricsTest, ShadowPassesByPresetWithAllOutcomesAndFiniteFiguresOnly) {
  NodeMetrics m("decode");
  m.CountShadowPass("full", ShadowOutcome::kDone);
  m.CountShadowPass("full", ShadowOutcome::kDone);
  m.CountShadowPass("int2", ShadowOutcome::kDropped);
  m.SetShadowQueueLength(3);
  m.ObserveShadow("full", {.agreement = 1, .mean_kl = 0, .key_error = 0, .value_error = 0, .seconds = 0.5});
  m.ObserveShadow("int2", {.agreement = 0.75, .mean_kl = 0.2, .key_error = 0.4,
                           .value_error = std::nan(""), .seconds = 1.5});
  auto server = MetricsServer::Start("127.0.0.1", 0, m.registry());
  ASSERT_TRUE(server.ok()) << server.status();
  auto text = HttpGet("127.0.0.1", (*server)->port(), "/metrics");
  ASSERT_TRUE(text.ok()) << text.status();
  const auto s = ParseSamples(*text);
  auto at = [&](const std::string& key) {
    auto it = s.find(key);
    return it == s.end() ? std::nan("") : it->second;
  };
  EXPECT_EQ(at(R"(kvwire_shadow_passes_total{outcome="done",preset="full",role="decode"})"), 2);
  EXPECT_EQ(at(R"(kvwire_shadow_passes_total{outcome="dropped",preset="full",role="decode"})"), 0);
  EXPECT_EQ(at(R"(kvwire_shadow_passes_total{outcome="dropped",preset="int2",role="decode"})"), 1);
  EXPECT_EQ(at(R"(kvwire_shadow_passes_total{outcome="failed",preset="int2",role="decode"})"), 0);
  EXPECT_EQ(at(R"(kvwire_shadow_queue_length{role="decode"})"), 3);
  // Agreement 1 falls in the le="1" bucket, not below it; KL exactly 0 in the first bucket.
  EXPECT_EQ(at(R"(kvwire_shadow_agreement_bucket{le="0.99",preset="full",role="decode"})"), 0);
  EXPECT_EQ(at(R"(kvwire_shadow_agreement_bucket{le="1",preset="full",role="decode"})"), 1);
  EXPECT_EQ(at(R"(kvwire_shadow_agreement_sum{preset="int2",role="decode"})"), 0.75);
  EXPECT_EQ(at(R"(kvwire_shadow_kl_divergence_bucket{le="1e-06",preset="full",role="decode"})"), 1);
  EXPECT_DOUBLE_EQ(at(R"(kvwire_shadow_kl_divergence_sum{preset="int2",role="decode"})"), 0.2);
  EXPECT_DOUBLE_EQ(at(R"(kvwire_shadow_reconstruction_error_sum{preset="int2",role="decode",tensor="key"})"), 0.4);
  // NaN (undefined relative error) is not observed.
  EXPECT_EQ(at(R"(kvwire_shadow_reconstruction_error_count{preset="int2",role="decode",tensor="value"})"), 0);
  EXPECT_EQ(at(R"(kvwire_shadow_duration_seconds_count{role="decode"})"), 2);
  EXPECT_TRUE(PromtoolCheckMetrics(*text).ok()) << PromtoolCheckMetrics(*text);

  NodeMetrics p("prefill");
  p.CountShadowSampled("int4-rans");
  p.SetShadowQueueLength(5);  // no queue on a prefill node
  auto pserver = MetricsServer::Start("127.0.0.1", 0, p.registry());
  ASSERT_TRUE(pserver.ok()) << pserver.status();
  auto ptext = HttpGet("127.0.0.1", (*pserver)->port(), "/metrics");
  ASSERT_TRUE(ptext.ok()) << ptext.status();
  EXPECT_EQ(ParseSamples(*ptext).at(R"(kvwire_shadow_sampled_total{preset="int4-rans",role="prefill"})"), 1);
  EXPECT_THAT(*ptext, Not(HasSubstr("kvwire_shadow_queue_length")));
  EXPECT_TRUE(PromtoolCheckMetrics(*ptext).ok()) << PromtoolCheckMetrics(*ptext);
}

TEST(MetricsTest, PromtoolRejectsBadExposition) {
  // The lint must be able to fail: a counter without _total is reported.
  const std::string bad = "# HELP foo_bytes a counter\n# TYPE foo_bytes counter\nfoo_bytes 1\n";
  EXPECT_FALSE(PromtoolCheckMetrics(bad).ok());
}

TEST(MetricsServerTest, BadAddressesAreErrors) {
  NodeMetrics m("decode");
  EXPECT_EQ(MetricsServer::Start("not-an-ip", 0, m.registry()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MetricsServer::Start("127.0.0.1", 70000, m.registry()).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto first = MetricsServer::Start("127.0.0.1", 0, m.registry());
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = MetricsServer::Start("127.0.0.1", (*first)->port(), m.registry());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable) << second.status();
}

}  // namespace
}  // namespace kvwire::metrics
