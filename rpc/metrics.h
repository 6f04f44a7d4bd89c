// Prometheus metrics: counters, gauges and latency histograms, rendered in the Prometheus text
// exposition format and served over HTTP at /metrics. Thread-safe: counters and histograms are
// atomics, so worker threads may update them.
#pragma once

#include <kj/async-io.h>
#include <kj/vector.h>

#include <array>
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace cairn {

class Counter {
 public:
  void inc(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// Latency histogram with fixed buckets from 50 us to 10 s.
class Histogram {
 public:
  static constexpr std::array<double, 14> BOUNDS = {0.00005, 0.0001, 0.00025, 0.0005, 0.001,
                                                    0.0025,  0.005,  0.01,    0.025,  0.05,
                                                    0.1,     0.5,    1.0,     10.0};
  void observe(double seconds);
  std::string render(const std::string& name, const std::string& labels) const;

 private:
  std::array<std::atomic<uint64_t>, BOUNDS.size() + 1> buckets_{};
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sumNanos_{0};
};

class Metrics {
 public:
  // Name and labels ("op=\"lookup\"") identify one series; the same pair returns the same object.
  Counter& counter(const std::string& name, const std::string& help, const std::string& labels = "");
  Histogram& histogram(const std::string& name, const std::string& help,
                       const std::string& labels = "");
  // A gauge read when scraped.
  void gauge(const std::string& name, const std::string& help, std::function<double()> read,
             const std::string& labels = "");

  std::string render() const;

  // Serves GET /metrics on addr ("127.0.0.1:9100"); returns the bound port.
  kj::Promise<uint> serve(kj::AsyncIoContext& io, const std::string& addr);

 private:
  struct Family {
    std::string help;
    std::string type;
    std::map<std::string, std::unique_ptr<Counter>> counters;
    std::map<std::string, std::unique_ptr<Histogram>> histograms;
    std::map<std::string, std::function<double()>> gauges;
  };
  kj::Promise<void> acceptLoop(kj::ConnectionReceiver& receiver);
  kj::Promise<void> handle(kj::Own<kj::AsyncIoStream> stream);

  mutable std::mutex mutex_;  // guards families_ (not the values inside)
  std::map<std::string, Family> families_;
  kj::Vector<kj::Own<kj::ConnectionReceiver>> receivers_;
  kj::Maybe<kj::Own<kj::TaskSet>> tasks_;
  struct ErrorHandler : kj::TaskSet::ErrorHandler {
    void taskFailed(kj::Exception&&) override {}
  } errorHandler_;
};

// Observes the time from construction to destruction into a histogram.
class ScopedLatency {
 public:
  explicit ScopedLatency(Histogram& h);
  ~ScopedLatency();

 private:
  Histogram& h_;
  int64_t startNs_;
};

}  // namespace cairn
