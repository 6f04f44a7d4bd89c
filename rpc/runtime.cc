#include "rpc/runtime.h"

#include <kj/async-unix.h>
#include <kj/debug.h>
#include <malloc.h>

#include <csignal>
#include <kj/exception.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <chrono>
#include <fstream>
#include <future>
#include <sstream>

namespace cairn {
void KjToSpdlog::logMessage(kj::LogSeverity severity, const char* file, int line, int contextDepth,
                            kj::String&& text) {
    switch (severity) {
      case kj::LogSeverity::INFO:
        spdlog::info("kj {}:{}: {}", file, line, text.cStr());
        break;
      case kj::LogSeverity::WARNING:
        spdlog::warn("kj {}:{}: {}", file, line, text.cStr());
        break;
      default:
        spdlog::error("kj {}:{}: {}", file, line, text.cStr());
        break;
    }
}

void keepLargeBuffers() {
  mallopt(M_MMAP_THRESHOLD, 8 << 20);
  // Freed memory above this at the top of the heap goes back to the kernel.
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
}

void setupLogging(const std::string& process, const std::string& level, const std::string& file) {
  std::shared_ptr<spdlog::logger> logger;
  if (file.empty()) {
    logger = spdlog::stderr_logger_mt(process);
  } else {
    logger = spdlog::basic_logger_mt(process, file);
  }
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %n[%P] %l: %v");
  logger->set_level(spdlog::level::from_str(level.empty() ? "info" : level));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

int waitForTermination(kj::AsyncIoContext& io) {
  kj::UnixEventPort::captureSignal(SIGTERM);
  kj::UnixEventPort::captureSignal(SIGINT);
  auto term = io.unixEventPort.onSignal(SIGTERM).exclusiveJoin(io.unixEventPort.onSignal(SIGINT));
  return term.wait(io.waitScope).si_signo;
}

std::string readWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) KJ_FAIL_REQUIRE("cannot read file", path, strerror(errno));
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

int64_t wallClockNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string toHex(const void* data, size_t size) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  auto p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < size; i++) {
    out.push_back(digits[p[i] >> 4]);
    out.push_back(digits[p[i] & 15]);
  }
  return out;
}

std::vector<std::string> splitList(const std::string& list, char sep) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : list) {
    if (c == sep) {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else if (c != ' ') {
      cur.push_back(c);
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

LoopThread::LoopThread() {
  std::promise<void> ready;
  auto readyFuture = ready.get_future();
  thread_ = std::thread([this, &ready]() {
    auto io = kj::setupAsyncIo();
    io_ = &io;
    executor_ = kj::getCurrentThreadExecutor().addRef();
    auto paf = kj::newPromiseAndFulfiller<void>();
    stop_ = kj::mv(paf.fulfiller);
    ready.set_value();
    paf.promise.wait(io.waitScope);
    io_ = nullptr;
  });
  readyFuture.wait();
}

LoopThread::~LoopThread() {
  executor_->executeSync([this]() {
    stop_->fulfill();
    stop_ = nullptr;
  });
  thread_.join();
}

}  // namespace cairn
