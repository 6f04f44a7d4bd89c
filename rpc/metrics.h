// Prometheus metrics: counters, gauges and latency histograms kept by prometheus-cpp, rendered in
// the Prometheus text exposition format and served over HTTP at /metrics. Thread-safe: counters
// and histograms may be updated from worker threads.
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

namespace prometheus {
class Registry;
class Counter;
class Gauge;
class Histogram;
}  // namespace prometheus

namespace cairn {

// One counter series (a prometheus-cpp counter).
class Counter {
 public:
  explicit Counter(prometheus::Counter& c) : c_(c) {}
  void inc(uint64_t n = 1);
  uint64_t value() const;

 private:
  prometheus::Counter& c_;
};

// Latency histogram with fixed buckets from 50 us to 10 s (a prometheus-cpp histogram).
class Histogram {
 public:
  static constexpr std::array<double, 14> BOUNDS = {0.00005, 0.0001, 0.00025, 0.0005, 0.001,
                                                    0.0025,  0.005,  0.01,    0.025,  0.05,
                                                    0.1,     0.5,    1.0,     10.0};
  explicit Histogram(prometheus::Histogram& h) : h_(h) {}
  void observe(double seconds);

 private:
  prometheus::Histogram& h_;
};

// A process's metrics: a prometheus-cpp registry, rendered in the Prometheus text format and
// served over HTTP at /metrics from the caller's KJ event loop (no threads of its own).
class Metrics {
 public:
  Metrics();
  ~Metrics();
  // Name and labels ("op=\"lookup\"") identify one series; the same pair returns the same object.
  Counter& counter(const std::string& name, const std::string& help, const std::string& labels = "");
  Histogram& histogram(const std::string& name, const std::string& help,
                       const std::string& labels = "");
  // A gauge read when scraped (on the thread that serves /metrics).
  void gauge(const std::string& name, const std::string& help, std::function<double()> read,
             const std::string& labels = "");

  std::string render() const;

  // Serves GET /metrics on addr ("127.0.0.1:9100"); returns the bound port.
  kj::Promise<uint> serve(kj::AsyncIoContext& io, const std::string& addr);
  // Closes every listening socket; call on the serving event loop's thread before it ends.
  void stopServing();

 private:
  kj::Promise<void> acceptLoop(kj::ConnectionReceiver& receiver);
  kj::Promise<void> handle(kj::Own<kj::AsyncIoStream> stream);

  std::shared_ptr<prometheus::Registry> registry_;
  mutable std::mutex mutex_;  // guards the maps below (not the values inside)
  std::map<std::string, void*> families_;  // name -> prometheus::Family<T>*
  std::map<std::string, std::unique_ptr<Counter>> counters_;      // name + labels
  std::map<std::string, std::unique_ptr<Histogram>> histograms_;  // name + labels
  std::vector<std::pair<prometheus::Gauge*, std::function<double()>>> gauges_;
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
