#include "server/metrics/log.h"

#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace kvwire::metrics {
namespace {

struct Capture {
  std::ostringstream out;
  Capture() { RedirectLogsForTesting(&out); }
  ~Capture() {
    RedirectLogsForTesting(nullptr);
    SetLogLevel(LogLevel::kInfo);
  }
};

TEST(LogTest, OneJsonObjectPerLine) {
  Capture c;
  LogEvent(LogLevel::kInfo, "request_done",
           {{"request_id", "r-1"}, {"code", "OK"}, {"message", "two\nlines \"quoted\""}, {"n", 3}});
  LogEvent(LogLevel::kWarning, "bad", {{"message", std::string("\xff\xfe invalid utf-8")}});
  const std::string text = c.out.str();
  std::istringstream lines(text);
  std::string line;
  std::vector<nlohmann::json> events;
  while (std::getline(lines, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << line;
    events.push_back(j);
  }
  ASSERT_EQ(events.size(), 2u) << text;
  EXPECT_EQ(events[0]["event"], "request_done");
  EXPECT_EQ(events[0]["level"], "info");
  EXPECT_EQ(events[0]["request_id"], "r-1");
  EXPECT_EQ(events[0]["message"], "two\nlines \"quoted\"");
  EXPECT_EQ(events[0]["n"], 3);
  EXPECT_THAT(events[0]["ts"].get<std::string>(), ::testing::MatchesRegex(
                                                      "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z"));
  EXPECT_EQ(events[1]["level"], "warning");
}

TEST(LogTest, LevelFilters) {
  Capture c;
  ASSERT_TRUE(SetLogLevel("warning").ok());
  LogEvent(LogLevel::kInfo, "dropped", {});
  LogEvent(LogLevel::kError, "kept", {});
  EXPECT_THAT(c.out.str(), ::testing::Not(::testing::HasSubstr("dropped")));
  EXPECT_THAT(c.out.str(), ::testing::HasSubstr(R"("event":"kept")"));
  EXPECT_EQ(SetLogLevel("loud").code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvwire::metrics
