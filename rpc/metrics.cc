#include "rpc/metrics.h"

#include <kj/debug.h>

#include <chrono>
#include <sstream>

namespace cairn {

namespace {
int64_t monoNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
std::string series(const std::string& name, const std::string& labels) {
  return labels.empty() ? name : name + "{" + labels + "}";
}
}  // namespace

void Histogram::observe(double seconds) {
  size_t i = 0;
  while (i < BOUNDS.size() && seconds > BOUNDS[i]) i++;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sumNanos_.fetch_add(static_cast<uint64_t>(seconds * 1e9), std::memory_order_relaxed);
}

std::string Histogram::render(const std::string& name, const std::string& labels) const {
  std::ostringstream out;
  uint64_t cumulative = 0;
  std::string sep = labels.empty() ? "" : labels + ",";
  for (size_t i = 0; i < BOUNDS.size(); i++) {
    cumulative += buckets_[i].load(std::memory_order_relaxed);
    out << name << "_bucket{" << sep << "le=\"" << BOUNDS[i] << "\"} " << cumulative << "\n";
  }
  cumulative += buckets_[BOUNDS.size()].load(std::memory_order_relaxed);
  out << name << "_bucket{" << sep << "le=\"+Inf\"} " << cumulative << "\n";
  out << series(name + "_sum", labels) << " "
      << static_cast<double>(sumNanos_.load(std::memory_order_relaxed)) / 1e9 << "\n";
  out << series(name + "_count", labels) << " " << count_.load(std::memory_order_relaxed)
      << "\n";
  return out.str();
}

Counter& Metrics::counter(const std::string& name, const std::string& help,
                          const std::string& labels) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto& f = families_[name];
  f.help = help;
  f.type = "counter";
  auto& c = f.counters[labels];
  if (!c) c = std::make_unique<Counter>();
  return *c;
}

Histogram& Metrics::histogram(const std::string& name, const std::string& help,
                              const std::string& labels) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto& f = families_[name];
  f.help = help;
  f.type = "histogram";
  auto& h = f.histograms[labels];
  if (!h) h = std::make_unique<Histogram>();
  return *h;
}

void Metrics::gauge(const std::string& name, const std::string& help, std::function<double()> read,
                    const std::string& labels) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto& f = families_[name];
  f.help = help;
  f.type = "gauge";
  f.gauges[labels] = std::move(read);
}

std::string Metrics::render() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::ostringstream out;
  for (auto& [name, f] : families_) {
    out << "# HELP " << name << " " << f.help << "\n# TYPE " << name << " " << f.type << "\n";
    for (auto& [labels, c] : f.counters) out << series(name, labels) << " " << c->value() << "\n";
    for (auto& [labels, h] : f.histograms) out << h->render(name, labels);
    for (auto& [labels, g] : f.gauges) out << series(name, labels) << " " << g() << "\n";
  }
  return out.str();
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
