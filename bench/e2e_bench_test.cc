// `kvwire bench e2e` on a small random model: every row is measured, the floor is bytes / link
// + prefill, the text path sends only token ids, and compression shrinks the prefill path's bytes.
#include "bench/e2e_bench.h"

#include <map>

#include "gtest/gtest.h"

namespace kvwire {
namespace {

TEST(E2eBenchTest, MeasuresEveryPathAndLinkWithItsFloor) {
  E2eBenchOptions o;
  o.model_dir = "/nonexistent/kvwire-model";  // a random model of the shape below
  o.tokens = 160;
  o.link_mbps = {50, 1000};
  o.presets = {"text", "full", "int4-rans"};
  o.reps = 1;
  o.threads = 1;
  o.hidden = 64;
  o.layers = 2;
  o.heads = 4;
  o.kv_heads = 2;
  o.intermediate = 128;
  auto report = MeasureE2e(o);
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_EQ(report->rows.size(), 6u);
  std::map<std::pair<std::string, double>, E2eRow> rows;
  for (const E2eRow& r : report->rows) {
    rows[{r.preset, r.link_mbps}] = r;
    EXPECT_EQ(r.prompt_tokens, 160) << r.preset;
    EXPECT_GT(r.wire_bytes, 0u) << r.preset;
    EXPECT_GT(r.prefill_seconds, 0) << r.preset;
    EXPECT_DOUBLE_EQ(r.link_seconds, 8.0 * r.wire_bytes / (r.link_mbps * 1e6));
    EXPECT_DOUBLE_EQ(r.floor_seconds, r.link_seconds + r.prefill_seconds);
    EXPECT_GT(r.ttft_seconds, 0) << r.preset;
    EXPECT_GE(r.ttft_seconds, r.link_seconds) << r.preset;  // the pacer holds the rate
  }
  const E2eRow& text = rows[{"text", 50}];
  const E2eRow& full = rows[{"full", 50}];
  const E2eRow& int4 = rows[{"int4-rans", 50}];
  EXPECT_LT(text.wire_bytes * 20, full.wire_bytes);  // a few bytes per token, no cache
  EXPECT_LT(int4.wire_bytes * 3, full.wire_bytes);
  EXPECT_EQ(full.raw_bytes, int4.raw_bytes);
  EXPECT_EQ((rows[{"full", 1000}].wire_bytes), full.wire_bytes);
  EXPECT_NE(report->model.find("random"), std::string::npos);
}

}  // namespace
}  // namespace kvwire
