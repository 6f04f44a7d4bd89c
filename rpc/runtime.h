// The small runtime every cairn process shares: logging setup, reading key and secret files,
// the wall clock, and a thread that runs a KJ event loop for callers on other threads.
#pragma once

#include <kj/async-io.h>
#include <kj/exception.h>
#include <kj/string.h>
#include <kj/function.h>
#include <spdlog/spdlog.h>

#include <cstdint>
#include <string>
#include <thread>
#include <vector>

namespace cairn {

// Sets the default spdlog logger (stderr, or `file` when not empty) with the process name in
// every line, and routes KJ's own log lines to it.
void setupLogging(const std::string& process, const std::string& level, const std::string& file);

// Sends KJ's log lines to spdlog. Must live on the stack of the thread it serves (main).
class KjToSpdlog final : public kj::ExceptionCallback {
 public:
  void logMessage(kj::LogSeverity severity, const char* file, int line, int contextDepth,
                  kj::String&& text) override;
};

// Makes malloc keep buffers of up to 8 MiB (messages, block runs, sealed data) in its heap when
// they are freed, instead of handing each back to the kernel: a fresh mapping faults in page
// by page, and on a virtual machine whose free memory goes back to the host every such page
// is a fault in the host too. Called first thing in main.
void keepLargeBuffers();

// Blocks until SIGTERM or SIGINT; returns the signal number.
int waitForTermination(kj::AsyncIoContext& io);

// Reads a whole file; throws a kj::Exception naming the path on failure.
std::string readWholeFile(const std::string& path);

// Nanoseconds since the Unix epoch.
int64_t wallClockNs();

std::string toHex(const void* data, size_t size);

// Splits "a,b,c" into its non-empty parts.
std::vector<std::string> splitList(const std::string& list, char sep = ',');

// Maximum size of one RPC message; larger messages are refused by the receiver.
constexpr uint64_t MAX_MESSAGE_BYTES = 32ull << 20;

// Runs a KJ event loop on its own thread. Other threads hand it work with run(), which blocks the
// calling thread until the function (and the promise it returns, if any) completes on the loop.
class LoopThread {
 public:
  LoopThread();
  ~LoopThread();
  KJ_DISALLOW_COPY(LoopThread);

  // Only valid on the loop thread, i.e. inside functions passed to run().
  kj::AsyncIoContext& io() { return *io_; }

  template <typename Func>
  auto run(Func&& func) {
    return executor_->executeSync(kj::fwd<Func>(func));
  }

  const kj::Executor& executor() const { return *executor_; }

 private:
  std::thread thread_;
  kj::AsyncIoContext* io_ = nullptr;
  kj::Own<const kj::Executor> executor_;
  kj::Own<kj::PromiseFulfiller<void>> stop_;  // lives on the loop thread
};

}  // namespace cairn
