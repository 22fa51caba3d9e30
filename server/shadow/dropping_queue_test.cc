#include "server/shadow/dropping_queue.h"

#include <atomic>
#include <future>
#include <vector>

#include "gtest/gtest.h"

namespace kvwire::shadow {
namespace {

TEST(DroppingQueueTest, FullQueueDropsInsteadOfGrowingOrWaiting) {
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::promise<void> started;
  std::atomic<int> ran{0}, discarded{0};
  std::vector<int> order;
  DroppingQueue queue(/*capacity=*/2, /*low_priority=*/true);
  // The first job holds the worker; two more may wait; the rest are refused at once.
  ASSERT_TRUE(queue.TryPush([&](bool run) {
    started.set_value();
    released.wait();
    if (run) ++ran;
  }));
  started.get_future().wait();
  EXPECT_EQ(queue.pending(), 1);
  int accepted = 0;
  for (int i = 0; i < 10; ++i) {
    accepted += queue.TryPush([&, i](bool run) {
      if (run) {
        ++ran;
        order.push_back(i);
      } else {
        ++discarded;
      }
    }) ? 1 : 0;
  }
  EXPECT_EQ(accepted, 2);
  EXPECT_EQ(queue.pending(), 3);
  release.set_value();
  queue.WaitIdle();
  EXPECT_EQ(ran, 3);
  EXPECT_EQ(order, (std::vector<int>{0, 1}));  // first come, first served
  EXPECT_EQ(discarded, 0);
  EXPECT_EQ(queue.pending(), 0);
  // Room again once drained.
  EXPECT_TRUE(queue.TryPush([&](bool run) { ran += run ? 1 : 0; }));
  queue.WaitIdle();
  EXPECT_EQ(ran, 4);
}

TEST(DroppingQueueTest, ShutdownDiscardsWaitingJobsAndFinishesTheRunningOne) {
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::promise<void> started;
  std::atomic<int> ran{0}, discarded{0};
  std::future<void> destroyed;
  {
    auto queue = std::make_unique<DroppingQueue>(4, false);
    ASSERT_TRUE(queue->TryPush([&](bool run) {
      started.set_value();
      released.wait();
      if (run) ++ran;
    }));
    started.get_future().wait();
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(queue->TryPush([&](bool run) { ++(run ? ran : discarded); }));
    }
    destroyed = std::async(std::launch::async, [q = std::move(queue)]() mutable { q.reset(); });
    // The destructor discards the waiting jobs before it waits for the running one.
    while (discarded.load() < 3) std::this_thread::yield();
    EXPECT_EQ(ran, 0);
    release.set_value();
    destroyed.get();
  }
  EXPECT_EQ(ran, 1);
  EXPECT_EQ(discarded, 3);
}

TEST(DroppingQueueTest, CapacityBelowOneMeansOne) {
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::promise<void> started;
  DroppingQueue queue(0, false);
  ASSERT_TRUE(queue.TryPush([&](bool) {
    started.set_value();
    released.wait();
  }));
  started.get_future().wait();
  EXPECT_TRUE(queue.TryPush([](bool) {}));
  EXPECT_FALSE(queue.TryPush([](bool) {}));
  release.set_value();
  queue.WaitIdle();
}

}  // namespace
}  // namespace kvwire::shadow
