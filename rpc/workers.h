// A small pool for the CPU work inside one request (sealing and opening blocks, checksums), so
// that a large read or write uses every core, not only the FUSE thread that carries it. The
// calling thread works too, so a busy pool only makes a request slower, never stuck.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace cairn {

class Workers {
 public:
  // `threads` helpers besides the caller (0: one fewer than the machine's cores).
  explicit Workers(size_t threads = 0);
  ~Workers();
  Workers(const Workers&) = delete;
  Workers& operator=(const Workers&) = delete;

  // Runs fn(begin, end) over [0, count) in pieces of `grain` items, on the helpers and the
  // calling thread; returns when every piece is done. Counts up to `grain` run inline. fn
  // must not throw (it may run on a helper thread).
  void parallelFor(size_t count, size_t grain, const std::function<void(size_t, size_t)>& fn);
  size_t helpers() const { return threads_.size(); }

 private:
  struct Job;
  static void runPieces(Job& job);
  void helperLoop();

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> queue_;  // one entry per helper a job asks for
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

// Threads that run submitted tasks in the background, in submission order per free thread;
// the destructor finishes every queued task, then joins.
class TaskQueue {
 public:
  explicit TaskQueue(size_t threads);
  ~TaskQueue();
  TaskQueue(const TaskQueue&) = delete;
  TaskQueue& operator=(const TaskQueue&) = delete;
  void submit(std::function<void()> task);  // task must not throw

 private:
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace cairn
