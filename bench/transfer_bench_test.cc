#include "bench/transfer_bench.h"

#include <gtest/gtest.h>

namespace kvwire {
namespace {

TEST(TransferBench, MeasuresEveryPathAtEveryChunkSize) {
  TransferBenchOptions o;
  o.tokens = 64;
  o.layers = 2;
  o.reps = 1;
  o.chunk_sizes = {4096, 1 << 20};
  absl::StatusOr<TransferReport> report = MeasureTransfer(o);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->config, "int4-rans");
  EXPECT_GT(report->frame_bytes, 0u);
  EXPECT_LT(report->frame_bytes, report->raw_bytes);
  ASSERT_EQ(report->rows.size(), 2u);
  for (const TransferRow& r : report->rows) {
    EXPECT_EQ(r.frame_bytes, report->frame_bytes);
    EXPECT_GT(r.grpc_verify_gbps(), 0);
    EXPECT_GT(r.grpc_drain_gbps(), 0);
    EXPECT_GT(r.tcp_gbps(), 0);
  }
}

TEST(TransferBench, BytesSendsAnUncompressedFrameOfAboutThatSize) {
  TransferBenchOptions o;
  o.layers = 2;
  o.bytes = 1 << 20;
  o.reps = 1;
  o.chunk_sizes = {256 << 10};
  absl::StatusOr<TransferReport> report = MeasureTransfer(o);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->config, "full");
  EXPECT_GE(report->frame_bytes, uint64_t{1} << 20);
  EXPECT_LT(report->frame_bytes, uint64_t{5} << 19);  // header and checksums only
}

TEST(TransferBench, RejectsChunksAboveTheSliceLimit) {
  TransferBenchOptions o;
  o.chunk_sizes = {(1 << 20) + 1};
  EXPECT_EQ(MeasureTransfer(o).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvwire
