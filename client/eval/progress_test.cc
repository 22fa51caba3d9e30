#include "client/eval/progress.h"

#include <cstdio>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvwire::eval {
namespace {

using ::testing::HasSubstr;

TEST(ProgressTest, Durations) {
  EXPECT_EQ(FormatDuration(9.4), "0:09");
  EXPECT_EQ(FormatDuration(247), "4:07");
  EXPECT_EQ(FormatDuration(3903), "1:05:03");
  EXPECT_EQ(FormatDuration(-1), "?");
}

TEST(ProgressTest, BarRateAndEta) {
  // 10 of 40 done in 5 s, all in this run: 2 items/s, 30 left -> 15 s.
  const std::string line = FormatProgress(10, 40, 10, 5.0, "int4 ex-3", 8);
  EXPECT_THAT(line, HasSubstr("[##......]"));
  EXPECT_THAT(line, HasSubstr("10/40"));
  EXPECT_THAT(line, HasSubstr(" 25%"));
  EXPECT_THAT(line, HasSubstr("2.0/s"));
  EXPECT_THAT(line, HasSubstr("ETA 0:15"));
  EXPECT_THAT(line, HasSubstr("int4 ex-3"));
  // Resumed items do not count toward the rate: 20 done, 2 of them this run in 4 s -> 2 s/item.
  const std::string resumed = FormatProgress(20, 40, 2, 4.0, "", 8);
  EXPECT_THAT(resumed, HasSubstr("2.0s/it"));
  EXPECT_THAT(resumed, HasSubstr("ETA 0:40"));
  EXPECT_THAT(FormatProgress(0, 40, 0, 0.0, ""), HasSubstr("ETA ?"));
}

TEST(ProgressTest, SilentWhenNotATerminal) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  {
    ProgressBar bar(3, 0, f);
    EXPECT_FALSE(bar.drawing());
    bar.Advance("a");
    bar.Advance("b");
  }
  EXPECT_EQ(std::ftell(f), 0);
  std::fclose(f);
}

}  // namespace
}  // namespace kvwire::eval
