// StopSignal: one thread's raise ends another thread's waits, on its event loop or asleep.
#include <gtest/gtest.h>
#include <kj/async-io.h>

#include <chrono>
#include <thread>

#include "fs/client.h"

namespace cairn::fs {
namespace {

using Clock = std::chrono::steady_clock;

TEST(StopSignal, RaiseFromAnotherThreadEndsAWaitOnALoop) {
  StopSignal stop;
  auto io = kj::setupAsyncIo();
  auto waited = stop.wait();
  auto start = Clock::now();
  std::thread raiser([&]() {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    stop.raise();
  });
  // Nothing else on this loop: only the raise can end the wait (a 5 s timer would fail it).
  bool raised = waited.then([]() { return true; })
                    .exclusiveJoin(io.provider->getTimer()
                                       .afterDelay(5 * kj::SECONDS)
                                       .then([]() { return false; }))
                    .wait(io.waitScope);
  raiser.join();
  EXPECT_TRUE(raised);
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(2));
  EXPECT_TRUE(stop.raised());
}

TEST(StopSignal, WaitAfterRaiseIsReady) {
  StopSignal stop;
  auto io = kj::setupAsyncIo();
  stop.raise();
  EXPECT_TRUE(stop.wait().poll(io.waitScope));
}

TEST(StopSignal, AnUnraisedWaitStaysPendingAndAWaitDroppedEarlyIsHarmless) {
  StopSignal stop;
  auto io = kj::setupAsyncIo();
  {
    auto dropped = stop.wait();
    EXPECT_FALSE(dropped.poll(io.waitScope));
  }  // dropped before the raise (as when meta answered first)
  auto second = stop.wait();
  EXPECT_FALSE(second.poll(io.waitScope));
  stop.raise();
  EXPECT_TRUE(second.poll(io.waitScope));
}

TEST(StopSignal, SleepEndsAtTheRaiseOrAtItsTime) {
  StopSignal stop;
  auto start = Clock::now();
  EXPECT_FALSE(stop.sleepFor(std::chrono::milliseconds(50)));
  EXPECT_GE(Clock::now() - start, std::chrono::milliseconds(50));
  std::thread raiser([&]() {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    stop.raise();
  });
  start = Clock::now();
  EXPECT_TRUE(stop.sleepFor(std::chrono::seconds(10)));
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(5));
  raiser.join();
  EXPECT_TRUE(stop.sleepFor(std::chrono::seconds(10)));  // raised: returns at once
}

}  // namespace
}  // namespace cairn::fs
