// Tests of rpc/metrics: series are rendered in the Prometheus text format by prometheus-cpp, with
// their labels, histogram buckets and gauges read at render time.
#include "rpc/metrics.h"

#include <gtest/gtest.h>

using cairn::Metrics;

TEST(Metrics, CountersHistogramsAndGaugesRenderWithTheirLabels) {
  Metrics m;
  auto& lookups = m.counter("cairn_test_requests_total", "Requests", "op=\"lookup\"");
  auto& reads = m.counter("cairn_test_requests_total", "Requests", "op=\"read\",errno=\"5\"");
  EXPECT_EQ(&lookups, &m.counter("cairn_test_requests_total", "Requests", "op=\"lookup\""));
  lookups.inc();
  lookups.inc(2);
  reads.inc(7);
  EXPECT_EQ(lookups.value(), 3u);
  auto& h = m.histogram("cairn_test_seconds", "Latency", "op=\"lookup\"");
  h.observe(0.0002);
  h.observe(3.0);
  double level = 1.5;
  m.gauge("cairn_test_level", "A level", [&level]() { return level; });
  std::string text = m.render();
  EXPECT_NE(text.find("# TYPE cairn_test_requests_total counter"), std::string::npos) << text;
  EXPECT_NE(text.find("cairn_test_requests_total{op=\"lookup\"} 3"), std::string::npos) << text;
  EXPECT_NE(text.find("cairn_test_requests_total{errno=\"5\",op=\"read\"} 7"), std::string::npos)
      << text;
  EXPECT_NE(text.find("cairn_test_seconds_bucket{op=\"lookup\",le=\"0.00025\"} 1"),
            std::string::npos) << text;
  EXPECT_NE(text.find("cairn_test_seconds_bucket{op=\"lookup\",le=\"+Inf\"} 2"), std::string::npos)
      << text;
  EXPECT_NE(text.find("cairn_test_seconds_count{op=\"lookup\"} 2"), std::string::npos) << text;
  EXPECT_NE(text.find("cairn_test_level 1.5"), std::string::npos) << text;
  level = 4;
  EXPECT_NE(m.render().find("cairn_test_level 4"), std::string::npos);
}
