#include "fs/fuse_loop.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <poll.h>
#include <pthread.h>
#include <sys/uio.h>
#include <unistd.h>
#include <spdlog/spdlog.h>

#include <kj/async-unix.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "fs/client.h"

namespace cairn::fs {
namespace {

class Loop {
 public:
  Loop(fuse_session* se, unsigned maxWorkers, Metrics* metrics)
      : se_(se), fd_(fuse_session_fd(se)), maxWorkers_(maxWorkers < 1 ? 1 : maxWorkers) {
    if (metrics)
      wakings_ = &metrics->counter("cairn_client_fuse_company_total",
                                   "Times the FUSE loop's workers were woken because requests "
                                   "came in company (the reader answers a lone caller alone)");
  }

  // The reader: the calling thread. It never parks.
  int run() {
    ClusterClient::setWaitCompanion(&companion);  // this thread's waits only
    fuse_buf buf{}, held{};
    int heldSize = 0;  // held: a request read early, answered next
    int err = 0;
    while (!fuse_session_exited(se_)) {
      int res;
      if (heldSize > 0) {
        std::swap(buf, held);
        res = std::exchange(heldSize, 0);
      } else {
        res = fuse_session_receive_buf(se_, &buf);
      }
      if (res == -EINTR || res == -EAGAIN) continue;
      if (res <= 0) {  // 0: the kernel said the mount is gone, and libfuse ended the session
        if (res < 0) err = res;
        break;
      }
      bool counted = countsAsCompany(buf, res);
      int busy = counted ? ++inflight_ : 0;
      if (!parallel_.load(std::memory_order_relaxed)) {
        if (opcodeOf(buf, res) == FUSE_SETLKW)
          goParallel();  // the unlock that ends its wait must find a reader
        else if (counted && waitingWorkers_.load(std::memory_order_relaxed) == 0)
          lookForCompany(held, heldSize);
      } else if (busy > 1) {
        noteBusy();
      }
      owesReply = counted;
      fuse_session_process_buf(se_, &buf);
      settle();
    }
    ClusterClient::setWaitCompanion(nullptr);
    free(buf.mem);
    free(held.mem);
    return err;
  }

  // Ends the workers: parked ones are woken, those blocked in read() are cancelled there (they
  // answer what they hold first). True when all have ended; false when one is still busy after
  // a few seconds (a lock wait, say): the loop must then outlive it.
  bool stop() {
    std::unique_lock<std::mutex> lock(mutex_);
    stopping_ = true;
    wake_.notify_all();
    for (auto& t : workers_) pthread_cancel(t.native_handle());
    bool ended = ended_.wait_for(lock, std::chrono::seconds(5), [&]() { return live_ == 0; });
    lock.unlock();
    for (auto& t : workers_) ended ? t.join() : t.detach();
    if (!ended) spdlog::warn("FUSE loop: a worker is still busy at the end of the session");
    return ended;
  }

 private:
  // Company is a caller's request waiting when the reader takes the next one, in most of the
  // last eight. What waits is read to see whose it is: forgets and releases, which the kernel
  // sends in the shadow of a lone caller's requests, are answered on the spot and do not count
  // (a forget can wait behind several requests: the kernel lets requests pass forgets at times);
  // a caller's request is held and answered next. (A worker still in read() from the last busy
  // spell is handed what arrives, and until it runs that request looks like one waiting: no
  // look while one is there.)
  void lookForCompany(fuse_buf& held, int& heldSize) {
    bool found = false;
    for (int i = 0; i < 16 && !found; i++) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 0) <= 0) break;
      int flags = fcntl(fd_, F_GETFL);
      if (flags < 0 || fcntl(fd_, F_SETFL, flags | O_NONBLOCK) < 0) break;
      int res = fuse_session_receive_buf(se_, &held);
      fcntl(fd_, F_SETFL, flags);
      if (res <= 0) break;
      if (countsAsCompany(held, res)) {
        heldSize = res;
        found = true;
      } else {
        fuse_session_process_buf(se_, &held);
      }
    }
    history_ = (history_ << 1) | (found ? 1 : 0);
    if (__builtin_popcount(history_ & 0xff) >= 6) goParallel();
  }

  // While the reader waits on its loop (for meta, a chunk server), a request that arrives and
  // still waits 2 ms later wakes the workers: a slow answer to one caller does not hold up the
  // others.
  static kj::Promise<void> companion(kj::AsyncIoContext& io) {
    Loop* self = current;
    if (self->parallel_.load(std::memory_order_relaxed) ||
        self->waitingWorkers_.load(std::memory_order_relaxed) > 0)
      return kj::NEVER_DONE;  // workers take what arrives
    auto observer = kj::heap<kj::UnixEventPort::FdObserver>(
        io.unixEventPort, self->fd_, kj::UnixEventPort::FdObserver::OBSERVE_READ);
    auto readable = observer->whenBecomesReadable();
    auto& timer = io.provider->getTimer();
    return readable.then([self, &timer]() {
      return timer.afterDelay(2 * kj::MILLISECONDS).then([self]() { self->goParallel(); });
    }).attach(kj::mv(observer));
  }

  static uint32_t opcodeOf(const fuse_buf& buf, int size) {
    return static_cast<size_t>(size) >= sizeof(fuse_in_header)
               ? static_cast<const fuse_in_header*>(buf.mem)->opcode
               : 0;
  }

  // The requests the kernel sends on its own, in the shadow of a caller's (forgets of evicted
  // inodes, releases of closed files) do not make two requests at once.
  static bool countsAsCompany(const fuse_buf& buf, int size) {
    switch (opcodeOf(buf, size)) {
      case 0:  // too short to say: libfuse answers it with an error
      case FUSE_FORGET:
      case FUSE_BATCH_FORGET:
      case FUSE_RELEASE:
      case FUSE_RELEASEDIR:
        return false;
      default:
        return true;
    }
  }

  static int64_t now() {
    return std::chrono::steady_clock::now().time_since_epoch() / std::chrono::milliseconds(1);
  }

  void noteBusy() { lastBusyMs_.store(now(), std::memory_order_relaxed); }

  void goParallel() {
    noteBusy();
    std::lock_guard<std::mutex> lock(mutex_);
    if (parallel_.load(std::memory_order_relaxed) || stopping_) return;
    parallel_.store(true, std::memory_order_relaxed);
    history_ = 0;
    if (wakings_) wakings_->inc();
    while (workers_.size() < maxWorkers_) {
      live_++;
      workers_.emplace_back([this]() { work(); });
    }
    wake_.notify_all();
  }

  // A worker reads and answers requests like libfuse's threads, while requests come in company;
  // after a while with none in company the workers park, and the reader is alone again.
  void work() {
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, nullptr);
    struct Leave {  // also when cancelled in read(): cancellation unwinds the stack
      Loop* loop;
      fuse_buf buf{};
      ~Leave() {
        free(buf.mem);
        std::lock_guard<std::mutex> lock(loop->mutex_);
        if (--loop->live_ == 0) loop->ended_.notify_all();
      }
    } leave{this};
    fuse_buf& buf = leave.buf;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&]() { return parallel_.load(std::memory_order_relaxed) || stopping_; });
        if (stopping_) break;
      }
      ++waitingWorkers_;
      pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, nullptr);
      int res = fuse_session_receive_buf(se_, &buf);
      pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, nullptr);
      --waitingWorkers_;
      if (res == -EINTR || res == -EAGAIN) continue;
      if (res <= 0) break;  // the session has ended
      bool counted = countsAsCompany(buf, res);
      if (counted && ++inflight_ > 1) noteBusy();
      owesReply = counted;
      fuse_session_process_buf(se_, &buf);
      settle();
      if (now() - lastBusyMs_.load(std::memory_order_relaxed) > kAloneMs) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (now() - lastBusyMs_.load(std::memory_order_relaxed) > kAloneMs)
          parallel_.store(false, std::memory_order_relaxed);
      }
    }
  }

  // A request counts from when it is read until its answer goes out (not until its thread is
  // done: after answering, a thread still sends what its connections owe, while the caller
  // already asks again).
  static ssize_t answer(int fd, iovec* iov, int count, void*) {
    if (owesReply) {
      owesReply = false;
      --current->inflight_;
    }
    return ::writev(fd, iov, count);
  }
  static ssize_t receive(int fd, void* buf, size_t size, void*) { return ::read(fd, buf, size); }
  void settle() {
    if (owesReply) {  // answered nothing (a forget), or answered before it was counted
      owesReply = false;
      --inflight_;
    }
  }

 public:
  static void install(fuse_session* se, Loop* loop) {
    current = loop;
    static const fuse_custom_io io{&answer, &receive, nullptr, nullptr};
    if (fuse_session_custom_io(se, &io, fuse_session_fd(se)) != 0)
      spdlog::warn("FUSE loop: answers cannot be counted; requests will look alone");
  }

 private:
  static inline Loop* current = nullptr;
  static inline thread_local bool owesReply = false;
  static constexpr int64_t kAloneMs = 50;

  fuse_session* se_;
  int fd_;
  Counter* wakings_ = nullptr;
  unsigned maxWorkers_;
  uint32_t history_ = 0;                // the reader's last requests: alone (0) or in company (1)
  std::atomic<int> inflight_{0};        // requests being answered
  std::atomic<int> waitingWorkers_{0};  // workers in read()
  std::atomic<bool> parallel_{false};   // workers read too
  std::atomic<int64_t> lastBusyMs_{0};  // when two requests were last answered at once
  std::mutex mutex_;
  std::condition_variable wake_;          // parallel_ or stopping_ set
  std::condition_variable ended_;
  std::vector<std::thread> workers_;
  unsigned live_ = 0;  // workers not yet ended
  bool stopping_ = false;
};

}  // namespace

int serveFuse(fuse_session* se, unsigned maxWorkers, Metrics* metrics,
              const std::function<void()>& ending) {
  auto* loop = new Loop(se, maxWorkers, metrics);
  Loop::install(se, loop);
  int err = loop->run();
  if (ending) ending();
  if (loop->stop()) delete loop;  // else a worker still uses it, until the process ends
  return err;
}

}  // namespace cairn::fs
