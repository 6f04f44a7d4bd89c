#include "rpc/workers.h"

#include <algorithm>
#include <atomic>

namespace cairn {

struct Workers::Job {
  size_t count = 0, grain = 1, pieces = 0;
  const std::function<void(size_t, size_t)>* fn = nullptr;
  std::atomic<size_t> next{0};
  std::mutex mutex;
  std::condition_variable done;
  size_t finished = 0;  // pieces done (mutex)
};

Workers::Workers(size_t threads) {
  if (threads == 0) {
    unsigned cores = std::thread::hardware_concurrency();
    threads = cores > 1 ? cores - 1 : 1;
  }
  for (size_t i = 0; i < threads; i++) threads_.emplace_back([this]() { helperLoop(); });
}

Workers::~Workers() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : threads_) t.join();
}

void Workers::runPieces(Job& job) {
  size_t ran = 0;
  for (size_t p; (p = job.next.fetch_add(1)) < job.pieces; ran++) {
    size_t begin = p * job.grain;
    (*job.fn)(begin, std::min(job.count, begin + job.grain));
  }
  if (ran == 0) return;
  std::lock_guard<std::mutex> lock(job.mutex);
  job.finished += ran;
  if (job.finished == job.pieces) job.done.notify_all();
}

void Workers::helperLoop() {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [this]() { return stop_ || !queue_.empty(); });
      if (stop_ && queue_.empty()) return;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    runPieces(*job);
  }
}

void Workers::parallelFor(size_t count, size_t grain,
                          const std::function<void(size_t, size_t)>& fn) {
  grain = std::max<size_t>(grain, 1);
  if (count <= grain || threads_.empty()) {
    if (count > 0) fn(0, count);
    return;
  }
  auto job = std::make_shared<Job>();
  job->count = count;
  job->grain = grain;
  job->pieces = (count + grain - 1) / grain;
  job->fn = &fn;
  size_t asks = std::min(threads_.size(), job->pieces - 1);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t i = 0; i < asks; i++) queue_.push_back(job);
  }
  for (size_t i = 0; i < asks; i++) wake_.notify_one();
  runPieces(*job);
  std::unique_lock<std::mutex> lock(job->mutex);
  job->done.wait(lock, [&]() { return job->finished == job->pieces; });
}

TaskQueue::TaskQueue(size_t threads) {
  for (size_t i = 0; i < std::max<size_t>(threads, 1); i++) {
    threads_.emplace_back([this]() {
      for (;;) {
        std::function<void()> task;
        {
          std::unique_lock<std::mutex> lock(mutex_);
          wake_.wait(lock, [this]() { return stop_ || !queue_.empty(); });
          if (queue_.empty()) return;  // stopping, and nothing left
          task = std::move(queue_.front());
          queue_.pop_front();
        }
        task();
      }
    });
  }
}

TaskQueue::~TaskQueue() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : threads_) t.join();
}

void TaskQueue::submit(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.push_back(std::move(task));
  }
  wake_.notify_one();
}

}  // namespace cairn
