#include "client/eval/records.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvwire::eval {
namespace {

using ::testing::HasSubstr;

EvalRecord Sample(const std::string& config, const std::string& id) {
  EvalRecord r;
  r.config = config;
  r.codec = "plan=*:int4";
  r.example_id = id;
  r.task = "passkey";
  r.score = 0.5;
  r.prediction = "1 2 3";
  r.prompt_tokens = 100;
  r.cached_tokens = 99;
  r.frame_bytes = 1234;
  r.raw_bytes = 5000;
  r.header_bytes = 80;
  r.elements = 2500;
  r.kept_elements = 2000;
  r.encode_seconds = 0.25;
  r.fidelity.steps = 16;
  r.fidelity.agreements = 15;
  r.fidelity.kl_sum = 0.125;
  r.key_error = {0.01, std::nan("")};
  r.value_error = {0.02, 0.03};
  return r;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(RecordTest, JsonLineRoundTrips) {
  const EvalRecord r = Sample("int4", "ex-1");
  auto back = RecordFromJsonLine(RecordToJsonLine(r));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->config, "int4");
  EXPECT_EQ(back->codec, "plan=*:int4");
  EXPECT_EQ(back->example_id, "ex-1");
  ASSERT_TRUE(back->score.has_value());
  EXPECT_EQ(*back->score, 0.5);
  EXPECT_EQ(back->frame_bytes, 1234u);
  EXPECT_EQ(back->cached_tokens, 99);
  EXPECT_EQ(back->fidelity.agreements, 15);
  EXPECT_EQ(back->fidelity.kl_sum, 0.125);
  ASSERT_EQ(back->key_error.size(), 2u);
  EXPECT_TRUE(std::isnan(back->key_error[1]));  // NaN travels as null
  EXPECT_EQ(back->value_error[1], 0.03);
  // Text samples carry no score.
  EvalRecord t = r;
  t.score.reset();
  EXPECT_FALSE(RecordFromJsonLine(RecordToJsonLine(t))->score.has_value());
}

TEST(RecordTest, BadLinesAreErrors) {
  EXPECT_FALSE(RecordFromJsonLine("{").ok());
  EXPECT_FALSE(RecordFromJsonLine("[]").ok());
  EXPECT_THAT(std::string(RecordFromJsonLine(R"({"config":"a"})").status().message()),
              HasSubstr("example_id"));
  EXPECT_THAT(std::string(RecordFromJsonLine(R"({"config":"a","example_id":"x","frame_bytes":-3})")
                              .status()
                              .message()),
              HasSubstr("frame_bytes"));
  EXPECT_THAT(std::string(RecordFromJsonLine(R"({"config":"a","example_id":"x","key_error":[1,"a"]})")
                              .status()
                              .message()),
              HasSubstr("key_error"));
}

class RecordLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = (std::filesystem::temp_directory_path() /
             ("kvwire_records_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "_" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".jsonl"))
                .string();
    std::filesystem::remove(path_);
  }
  void TearDown() override { std::filesystem::remove(path_); }
  std::string path_;
  RunMeta meta_{"qwen2-abc", "tasks.jsonl", "fidelity_tokens=16"};
};

TEST_F(RecordLogTest, ResumesWhatWasWritten) {
  {
    auto log = RecordLog::Open(path_, meta_, false);
    ASSERT_TRUE(log.ok()) << log.status();
    EXPECT_EQ((*log)->resumed(), 0u);
    ASSERT_TRUE((*log)->Append(Sample("int4", "a")).ok());
    ASSERT_TRUE((*log)->Append(Sample("int4", "b")).ok());
    EXPECT_TRUE((*log)->Has("int4", "plan=*:int4", "a"));
  }
  auto log = RecordLog::Open(path_, meta_, false);
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ((*log)->resumed(), 2u);
  EXPECT_TRUE((*log)->Has("int4", "plan=*:int4", "b"));
  EXPECT_FALSE((*log)->Has("int4", "plan=*:int8", "b"));  // another codec under the same label
  EXPECT_FALSE((*log)->Has("int4", "plan=*:int4", "c"));
  ASSERT_TRUE((*log)->Append(Sample("int4", "c")).ok());
  log->reset();
  auto again = RecordLog::Open(path_, meta_, false);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->records().size(), 3u);
}

TEST_F(RecordLogTest, TornLastLineIsCutOff) {
  {
    auto log = RecordLog::Open(path_, meta_, false);
    ASSERT_TRUE(log.ok());
    ASSERT_TRUE((*log)->Append(Sample("int4", "a")).ok());
  }
  const std::string good = ReadAll(path_);
  std::ofstream(path_, std::ios::app) << R"({"config":"int4","example_id":"b","fra)";
  auto log = RecordLog::Open(path_, meta_, false);
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ((*log)->resumed(), 1u);
  ASSERT_TRUE((*log)->Append(Sample("int4", "b")).ok());
  log->reset();
  const std::string now = ReadAll(path_);
  EXPECT_EQ(now.substr(0, good.size()), good);
  EXPECT_EQ(RecordLog::Open(path_, meta_, false).value()->records().size(), 2u);
}

TEST_F(RecordLogTest, CompleteLastRecordWithoutNewlineIsKept) {
  {
    auto log = RecordLog::Open(path_, meta_, false);
    ASSERT_TRUE(log.ok());
  }
  std::ofstream(path_, std::ios::app) << RecordToJsonLine(Sample("int4", "a"));
  auto log = RecordLog::Open(path_, meta_, false);
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ((*log)->resumed(), 1u);
  ASSERT_TRUE((*log)->Append(Sample("int4", "b")).ok());
  log->reset();
  EXPECT_EQ(RecordLog::Open(path_, meta_, false).value()->records().size(), 2u);
}

// Regression: a header field of another type made json::value() throw and abort eval.
TEST_F(RecordLogTest, MalformedHeaderIsNotALog) {
  std::ofstream(path_) << R"({"kvwire_eval":1,"model_fingerprint":5,"source":"s","settings":"x"})" << "\n";
  auto log = RecordLog::Open(path_, meta_, false);
  EXPECT_EQ(log.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(log.status().message()), HasSubstr("not a kvwire eval log"));
}

TEST_F(RecordLogTest, OtherRunsAreRefusedUnlessOverwritten) {
  {
    auto log = RecordLog::Open(path_, meta_, false);
    ASSERT_TRUE(log.ok());
    ASSERT_TRUE((*log)->Append(Sample("int4", "a")).ok());
  }
  RunMeta other = meta_;
  other.model_fingerprint = "llama-xyz";
  auto refused = RecordLog::Open(path_, other, false);
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("--overwrite"));
  auto fresh = RecordLog::Open(path_, other, true);
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ((*fresh)->resumed(), 0u);
  fresh->reset();
  EXPECT_EQ(RecordLog::Open(path_, other, false).value()->records().size(), 0u);
}

TEST_F(RecordLogTest, MalformedMiddleLineIsAnError) {
  {
    auto log = RecordLog::Open(path_, meta_, false);
    ASSERT_TRUE(log.ok());
  }
  std::ofstream(path_, std::ios::app) << "garbage\n" << RecordToJsonLine(Sample("x", "a")) << "\n";
  auto log = RecordLog::Open(path_, meta_, false);
  ASSERT_EQ(log.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(log.status().message()), HasSubstr(":2:"));
  std::ofstream(path_, std::ios::trunc) << "not a log\n";
  EXPECT_EQ(RecordLog::Open(path_, meta_, false).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvwire::eval
