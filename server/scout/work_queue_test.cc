// WorkQueue: at most max_queued jobs wait for a worker; more are refused at once.
#include "server/scout/work_queue.h"

#include <atomic>
#include <future>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace kvwire::scout {
namespace {

using ::testing::HasSubstr;

TEST(WorkQueueTest, RefusesBeyondMaxQueuedAndRunsWhatItQueued) {
  std::promise<void> started, release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> ran{0};
  {
    WorkQueue queue(/*workers=*/1, /*max_queued=*/2);
    ASSERT_TRUE(queue.Post([&] {
                       started.set_value();
                       released.wait();
                       ++ran;
                     })
                    .ok());
    started.get_future().wait();  // the only worker is busy: what follows waits
    EXPECT_TRUE(queue.Post([&] { ++ran; }).ok());
    EXPECT_TRUE(queue.Post([&] { ++ran; }).ok());
    const absl::Status full = queue.Post([&] { ++ran; });
    EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
    EXPECT_THAT(full.message(), HasSubstr("2 requests are already waiting"));
    release.set_value();
  }  // the destructor runs what was queued, then joins
  EXPECT_EQ(ran.load(), 3);
}

TEST(WorkQueueTest, ZeroMaxQueuedMeansNoLimit) {
  std::promise<void> started, release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> ran{0};
  {
    WorkQueue queue(/*workers=*/1, /*max_queued=*/0);
    ASSERT_TRUE(queue.Post([&] {
                       started.set_value();
                       released.wait();
                     })
                    .ok());
    started.get_future().wait();
    for (int i = 0; i < 500; ++i) EXPECT_TRUE(queue.Post([&] { ++ran; }).ok()) << i;
    release.set_value();
  }
  EXPECT_EQ(ran.load(), 500);
}

}  // namespace
}  // namespace kvwire::scout
