#include "rpc/metrics.h"

#include <kj/debug.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <chrono>
#include <sstream>

namespace cairn {

namespace {
int64_t monoNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// `op="lookup",errno="5"` -> {{"op","lookup"},{"errno","5"}}. Values are ours (operation names,
// numbers): no escapes inside them.
prometheus::Labels parseLabels(const std::string& text) {
  prometheus::Labels out;
  size_t at = 0;
  while (at < text.size()) {
    size_t eq = text.find('=', at);
    KJ_REQUIRE(eq != std::string::npos && eq + 1 < text.size() && text[eq + 1] == '"',
               "bad metric labels", text);
    size_t end = text.find('"', eq + 2);
    KJ_REQUIRE(end != std::string::npos, "bad metric labels", text);
    out[text.substr(at, eq - at)] = text.substr(eq + 2, end - eq - 2);
    at = end + 1;
    if (at < text.size() && text[at] == ',') at++;
  }
  return out;
}
}  // namespace

void Counter::inc(uint64_t n) { c_.Increment(static_cast<double>(n)); }
uint64_t Counter::value() const { return static_cast<uint64_t>(c_.Value()); }

void Histogram::observe(double seconds) { h_.Observe(seconds); }

Metrics::Metrics() : registry_(std::make_shared<prometheus::Registry>()) {}
Metrics::~Metrics() = default;

Counter& Metrics::counter(const std::string& name, const std::string& help,
                          const std::string& labels) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto& c = counters_[name + "{" + labels + "}"];
  if (!c) {
    auto& f = families_[name];
    if (!f) f = &prometheus::BuildCounter().Name(name).Help(help).Register(*registry_);
    c = std::make_unique<Counter>(
        static_cast<prometheus::Family<prometheus::Counter>*>(f)->Add(parseLabels(labels)));
  }
  return *c;
}

Histogram& Metrics::histogram(const std::string& name, const std::string& help,
                              const std::string& labels) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto& h = histograms_[name + "{" + labels + "}"];
  if (!h) {
    auto& f = families_[name];
    if (!f) f = &prometheus::BuildHistogram().Name(name).Help(help).Register(*registry_);
    prometheus::Histogram::BucketBoundaries bounds(Histogram::BOUNDS.begin(),
                                                   Histogram::BOUNDS.end());
    h = std::make_unique<Histogram>(
        static_cast<prometheus::Family<prometheus::Histogram>*>(f)->Add(parseLabels(labels),
                                                                        bounds));
  }
  return *h;
}

void Metrics::gauge(const std::string& name, const std::string& help, std::function<double()> read,
                    const std::string& labels) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto& f = families_[name];
  if (!f) f = &prometheus::BuildGauge().Name(name).Help(help).Register(*registry_);
  auto& g = static_cast<prometheus::Family<prometheus::Gauge>*>(f)->Add(parseLabels(labels));
  for (auto& [existing, fn] : gauges_) {
    if (existing == &g) {
      fn = std::move(read);
      return;
    }
  }
  gauges_.emplace_back(&g, std::move(read));
}

std::string Metrics::render() const {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& [g, read] : gauges_) g->Set(read());
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

kj::Promise<uint> Metrics::serve(kj::AsyncIoContext& io, const std::string& addr) {
  if (tasks_ == nullptr) tasks_ = kj::heap<kj::TaskSet>(errorHandler_);
  return io.provider->getNetwork().parseAddress(addr).then([this](kj::Own<kj::NetworkAddress> a) {
    auto receiver = a->listen();
    uint port = receiver->getPort();
    KJ_ASSERT_NONNULL(tasks_)->add(acceptLoop(*receiver));
    receivers_.add(kj::mv(receiver));
    return port;
  });
}

void Metrics::stopServing() {
  tasks_ = nullptr;
  receivers_.clear();
}

kj::Promise<void> Metrics::acceptLoop(kj::ConnectionReceiver& receiver) {
  return receiver.accept().then([this, &receiver](kj::Own<kj::AsyncIoStream> stream) {
    KJ_ASSERT_NONNULL(tasks_)->add(handle(kj::mv(stream)));
    return acceptLoop(receiver);
  });
}

kj::Promise<void> Metrics::handle(kj::Own<kj::AsyncIoStream> stream) {
  // A minimal HTTP/1.0 responder: read the request head (bounded), answer, close.
  auto buffer = kj::heapArray<char>(8192);
  auto& s = *stream;
  auto ptr = buffer.begin();
  return s.tryRead(ptr, 1, buffer.size())
      .then([this, &s, buffer = kj::mv(buffer)](size_t n) mutable {
        std::string head(buffer.begin(), n);
        bool ok = head.rfind("GET /metrics", 0) == 0;
        std::string body = ok ? render() : "not found\n";
        std::string response = std::string(ok ? "HTTP/1.0 200 OK\r\n" : "HTTP/1.0 404 Not Found\r\n") +
                               "Content-Type: text/plain; version=0.0.4\r\nContent-Length: " +
                               std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
        auto out = kj::heapString(response.data(), response.size());
        auto p = s.write(out.begin(), out.size());
        return p.attach(kj::mv(out));
      })
      .attach(kj::mv(stream));
}

ScopedLatency::ScopedLatency(Histogram& h) : h_(h), startNs_(monoNs()) {}
ScopedLatency::~ScopedLatency() { h_.observe(static_cast<double>(monoNs() - startNs_) / 1e9); }

}  // namespace cairn
