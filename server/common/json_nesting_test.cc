#include "server/common/json_nesting.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvwire::common {
namespace {

std::string Nested(int levels) { return std::string(levels, '[') + std::string(levels, ']'); }

TEST(JsonNestingTest, CountsArraysAndObjects) {
  EXPECT_EQ(JsonNestingDepth("1"), 0);
  EXPECT_EQ(JsonNestingDepth("{\"a\": [1, {\"b\": []}], \"c\": {}}"), 4);
  EXPECT_EQ(JsonNestingDepth(Nested(128)), 128);
}

TEST(JsonNestingTest, BracketsInsideStringsDoNotCount) {
  EXPECT_EQ(JsonNestingDepth(R"({"a": "[[[{{{", "b": "\"[[["})"), 1);
  // An escaped backslash before the closing quote ends the string.
  EXPECT_EQ(JsonNestingDepth(R"(["\\", [[]]])"), 3);
}

TEST(JsonNestingTest, StopsCountingPastTheLimit) {
  EXPECT_EQ(JsonNestingDepth(Nested(1000), 10), 11);
  EXPECT_EQ(JsonNestingDepth(std::string(3'000'000, '[')), kMaxJsonNesting + 1);
}

TEST(JsonNestingTest, CheckNamesTheDocument) {
  EXPECT_TRUE(CheckJsonNesting(Nested(kMaxJsonNesting), "config.json").ok());
  const absl::Status st = CheckJsonNesting(Nested(kMaxJsonNesting + 1), "config.json");
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), testing::HasSubstr("config.json nests"));
}

}  // namespace
}  // namespace kvwire::common
