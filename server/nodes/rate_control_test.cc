// Rate control on the prefill node: ChooseRung's arithmetic, and a prefill node with a quality
// ladder picking each request's codec from its byte budget or time-to-first-token target.
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "client/eval/ladder.h"
#include "proto/kvwire.grpc.pb.h"
#include "server/nodes/prefill_service.h"
#include "server/nodes/servers.h"
#include "server/nodes/testing/tiny_model.h"

namespace kvwire::nodes {
namespace {

using ::testing::HasSubstr;

eval::QualityLadder TwoRungs() {
  eval::QualityLadder ladder;
  ladder.model_fingerprint = "m";
  ladder.quality_metric = "task_score";
  ladder.reference_score = 1;
  // 100 tokens: small = 1000 + 10 * 100 = 2000 bytes, big = 2000 + 40 * 100 = 6000 bytes.
  ladder.rungs = {{.name = "small", .codec = "plan=*:int4", .score = 0.8, .relative_score = 0.8,
                   .bytes_per_token = 10, .fixed_bytes = 1000},
                  {.name = "big", .codec = "plan=*:int8", .score = 1, .relative_score = 1,
                   .bytes_per_token = 40, .fixed_bytes = 2000}};
  return ladder;
}

kvwire::v1::RateControl Budget(uint64_t bytes) {
  kvwire::v1::RateControl rc;
  rc.set_byte_budget(bytes);
  return rc;
}

TEST(ChooseRungTest, ByteBudgetPicksTheBestRungThatFits) {
  const eval::QualityLadder ladder = TwoRungs();
  auto big = ChooseRung(ladder, Budget(6000), 100, 0, 0);
  ASSERT_TRUE(big.ok()) << big.status();
  EXPECT_EQ(big->rung(), "big");
  EXPECT_EQ(big->codec_config(), "plan=*:int8");
  EXPECT_DOUBLE_EQ(big->predicted_bytes(), 6000);
  EXPECT_DOUBLE_EQ(big->budget_bytes(), 6000);
  EXPECT_TRUE(big->fits());
  auto small = ChooseRung(ladder, Budget(5999), 100, 0, 0);
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(small->rung(), "small");
  EXPECT_DOUBLE_EQ(small->relative_score(), 0.8);
  // Nothing fits: the smallest rung, flagged, unless the request requires a fit.
  auto none = ChooseRung(ladder, Budget(1500), 100, 0, 0);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->rung(), "small");
  EXPECT_FALSE(none->fits());
  kvwire::v1::RateControl strict = Budget(1500);
  strict.set_require_fit(true);
  auto refused = ChooseRung(ladder, strict, 100, 0, 0);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(refused.status().message(), HasSubstr("small"));
}

TEST(ChooseRungTest, TimeTargetUsesTheLinkLeftAfterTheNodesOwnWork) {
  const eval::QualityLadder ladder = TwoRungs();
  kvwire::v1::RateControl rc;
  rc.set_ttft_target_seconds(1.0);
  rc.set_link_mbps(0.064);  // 8000 bytes/s
  // 0.5 s of prefill leaves 4000 bytes: only "small" (2000) fits.
  auto tight = ChooseRung(ladder, rc, 100, 0, 0.5);
  ASSERT_TRUE(tight.ok()) << tight.status();
  EXPECT_EQ(tight->rung(), "small");
  EXPECT_DOUBLE_EQ(tight->budget_bytes(), 4000);
  // With no prefill estimate the whole second carries 8000 bytes: "big" fits.
  EXPECT_EQ(ChooseRung(ladder, rc, 100, 0, 0)->rung(), "big");
  // The node's link rate stands in for the request's; the tighter of two limits wins.
  rc.set_link_mbps(0);
  EXPECT_EQ(ChooseRung(ladder, rc, 100, 64000, 0)->rung(), "big");
  rc.set_byte_budget(3000);
  auto both = ChooseRung(ladder, rc, 100, 64000, 0);
  EXPECT_EQ(both->rung(), "small");
  EXPECT_DOUBLE_EQ(both->budget_bytes(), 3000);
  // A target past which nothing is left: nothing fits.
  rc.set_byte_budget(0);
  EXPECT_FALSE(ChooseRung(ladder, rc, 100, 64000, 2.0)->fits());
}

TEST(ChooseRungTest, RejectsRequestsItCannotServe) {
  const eval::QualityLadder ladder = TwoRungs();
  EXPECT_EQ(ChooseRung(ladder, kvwire::v1::RateControl(), 100, 0, 0).status().code(),
            absl::StatusCode::kInvalidArgument);  // no limit at all
  kvwire::v1::RateControl no_link;
  no_link.set_ttft_target_seconds(1);
  auto s = ChooseRung(ladder, no_link, 100, 0, 0);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("link rate"));
  kvwire::v1::RateControl negative;
  negative.set_ttft_target_seconds(-1);
  EXPECT_EQ(ChooseRung(ladder, negative, 100, 1e6, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Real nodes: the ladder's rungs are measured on the node itself (int8 and int4-rans frames of
// this prompt), so its predictions are exact and a budget between them must pick the smaller.
class RateControlNodeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "rate_control_XXXXXX").string();
    root_ = mkdtemp(tmpl.data());
    model_ = (root_ / "model").string();
    ASSERT_TRUE(testing::WriteTinyModel(model_, testing::TinyConfig(2)).ok());
    auto decode = StartDecodeNode({.model = {.model_dir = model_, .threads = 1}});
    ASSERT_TRUE(decode.ok()) << decode.status();
    decode_ = *std::move(decode);
  }
  void TearDown() override {
    if (decode_) decode_->Shutdown(std::chrono::seconds(2));
    std::filesystem::remove_all(root_);
  }

  absl::StatusOr<std::unique_ptr<RunningServer>> Prefill(const std::string& ladder_file) {
    return StartPrefillNode({.model = {.model_dir = model_, .threads = 1},
                             .decode_address = "127.0.0.1:" + std::to_string(decode_->port()),
                             .workers = 1,
                             .ladder_file = ladder_file});
  }

  static grpc::Status Call(const RunningServer& node, const kvwire::v1::GenerateRequest& request,
                           kvwire::v1::GenerateReply* reply) {
    auto stub = kvwire::v1::PrefillNode::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(node.port()), grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    return stub->Generate(&context, request, reply);
  }

  static kvwire::v1::GenerateRequest Request() {
    kvwire::v1::GenerateRequest r;
    r.set_context("The keeper's daughter rowed out to the reef and brought back nine sailors.");
    r.set_question("Who rowed out?");
    r.mutable_options()->set_max_new_tokens(3);
    return r;
  }

  std::filesystem::path root_;
  std::string model_;
  std::unique_ptr<RunningServer> decode_;
};

TEST_F(RateControlNodeTest, PrefillNodePicksTheRungThatFitsTheRequest) {
  auto plain = Prefill("");
  ASSERT_TRUE(plain.ok()) << plain.status();
  // Measure both rungs on this prompt.
  kvwire::v1::GenerateReply int8, int4;
  kvwire::v1::GenerateRequest request = Request();
  request.set_codec_preset("int8");
  ASSERT_TRUE(Call(**plain, request, &int8).ok());
  request.set_codec_preset("int4-rans");
  ASSERT_TRUE(Call(**plain, request, &int4).ok());
  ASSERT_LT(int4.stats().wire_bytes(), int8.stats().wire_bytes());
  const int tokens = int8.stats().prompt_tokens() - 1;  // the cache covers all but the last
  eval::QualityLadder ladder;
  ladder.model_fingerprint = (*plain)->model().fingerprint;
  ladder.quality_metric = "agreement";
  ladder.reference_score = 1;
  ladder.rungs = {{.name = "int4-rans", .codec = int4.codec_config(), .score = 0.9,
                   .relative_score = 0.9,
                   .bytes_per_token = static_cast<double>(int4.stats().wire_bytes()) / tokens},
                  {.name = "int8", .codec = int8.codec_config(), .score = 1, .relative_score = 1,
                   .bytes_per_token = static_cast<double>(int8.stats().wire_bytes()) / tokens}};
  const std::string ladder_file = (root_ / "ladder.json").string();
  std::ofstream(ladder_file) << eval::LadderToJson(ladder);

  // Without a ladder the node cannot rate-control.
  kvwire::v1::GenerateRequest rated = Request();
  *rated.mutable_rate_control() = Budget(int8.stats().wire_bytes());
  kvwire::v1::GenerateReply reply;
  grpc::Status s = Call(**plain, rated, &reply);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  (*plain)->Shutdown(std::chrono::seconds(2));

  auto node = Prefill(ladder_file);
  ASSERT_TRUE(node.ok()) << node.status();
  s = Call(**node, rated, &reply);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(reply.rate_decision().rung(), "int8");
  EXPECT_TRUE(reply.rate_decision().fits());
  EXPECT_EQ(reply.codec_config(), int8.codec_config());
  EXPECT_EQ(reply.stats().wire_bytes(), int8.stats().wire_bytes());
  EXPECT_EQ(reply.text(), int8.text());

  *rated.mutable_rate_control() = Budget(int8.stats().wire_bytes() - 1);
  s = Call(**node, rated, &reply);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(reply.rate_decision().rung(), "int4-rans");
  EXPECT_EQ(reply.stats().wire_bytes(), int4.stats().wire_bytes());
  EXPECT_LE(reply.stats().wire_bytes(), int8.stats().wire_bytes() - 1);

  kvwire::v1::RateControl strict = Budget(int4.stats().wire_bytes() / 2);
  strict.set_require_fit(true);
  *rated.mutable_rate_control() = strict;
  EXPECT_EQ(Call(**node, rated, &reply).error_code(), grpc::StatusCode::OUT_OF_RANGE);

  rated.set_codec_preset("int8");  // a codec and rate control at once
  s = Call(**node, rated, &reply);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("not both"));
  (*node)->Shutdown(std::chrono::seconds(2));

  // A ladder measured on another model is refused at start.
  ladder.model_fingerprint = "another-model";
  std::ofstream(ladder_file, std::ios::trunc) << eval::LadderToJson(ladder);
  auto wrong = Prefill(ladder_file);
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace kvwire::nodes
