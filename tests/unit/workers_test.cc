// The worker pool that seals and opens the blocks of one request on every core.
#include "rpc/workers.h"

#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>
#include <vector>

namespace cairn {
namespace {

TEST(Workers, EveryIndexRunsExactlyOnceWhileManyCallersShareThePool) {
  // Proves parallelFor's contract under contention: eight threads each split 10,000 items into
  // pieces of 7 on a 2-helper pool; every item of every call is visited once, pieces stay
  // within [0, count), and small counts run inline on the caller.
  Workers pool(2);
  ASSERT_EQ(pool.helpers(), 2u);
  std::vector<std::thread> callers;
  std::atomic<int> bad{0};
  for (int c = 0; c < 8; c++) {
    callers.emplace_back([&]() {
      for (int round = 0; round < 20; round++) {
        const size_t n = 10000;
        std::vector<std::atomic<int>> hits(n);
        pool.parallelFor(n, 7, [&](size_t b, size_t e) {
          if (b >= e || e > n || e - b > 7) bad++;
          for (size_t i = b; i < e; i++) hits[i]++;
        });
        for (auto& h : hits)
          if (h != 1) bad++;
      }
    });
  }
  for (auto& t : callers) t.join();
  EXPECT_EQ(bad, 0);
  std::thread::id ran;
  pool.parallelFor(5, 8, [&](size_t b, size_t e) {
    EXPECT_EQ(b, 0u);
    EXPECT_EQ(e, 5u);
    ran = std::this_thread::get_id();
  });
  EXPECT_EQ(ran, std::this_thread::get_id());
  int calls = 0;
  pool.parallelFor(0, 8, [&](size_t, size_t) { calls++; });
  EXPECT_EQ(calls, 0);
}

TEST(Workers, HelpersTakePartInLargeJobs) {
  // Proves the pool does spread work: pieces of a large job that each wait a little run on more
  // than one thread.
  Workers pool(2);
  std::mutex m;
  std::set<std::thread::id> threads;
  pool.parallelFor(64, 1, [&](size_t, size_t) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    std::lock_guard<std::mutex> lock(m);
    threads.insert(std::this_thread::get_id());
  });
  EXPECT_GT(threads.size(), 1u);
}

TEST(TaskQueue, RunsEveryTaskAndFinishesTheQueueBeforeItGoes) {
  // Proves the background queue that sends whole-block writes: every task submitted from
  // several threads runs once, and destroying the queue waits for the ones still queued.
  std::atomic<int> ran{0};
  {
    TaskQueue q(3);
    std::vector<std::thread> submitters;
    for (int t = 0; t < 4; t++)
      submitters.emplace_back([&]() {
        for (int i = 0; i < 250; i++)
          q.submit([&]() {
            std::this_thread::sleep_for(std::chrono::microseconds(20));
            ran++;
          });
      });
    for (auto& t : submitters) t.join();
  }
  EXPECT_EQ(ran, 1000);
}

}  // namespace
}  // namespace cairn
