#include "slimta/metrics.h"

#include <gtest/gtest.h>

#include "slimta/errors.h"

namespace slimta::metrics {
namespace {

TEST(MetricsTest, RendersCountersGaugesAndHistogramsInTheTextFormat) {
  Registry r;
  r.counter("x_total", "Things done", {{"kind", "a"}}).inc(3);
  r.counter("x_total", "Things done", {{"kind", "b\"\\\n"}}).inc();
  EXPECT_EQ(&r.counter("x_total", "Things done", {{"kind", "a"}}),
            &r.counter("x_total", "Things done", {{"kind", "a"}}));
  r.gauge("depth", "Queue depth\nnow", [] { return 2.5; });
  Histogram& h = r.histogram("took_seconds", "Time", {0.1, 1});
  h.observe(0.05);
  h.observe(0.1);  // an upper bound is inclusive
  h.observe(3);
  EXPECT_EQ(r.render(),
            "# HELP x_total Things done\n"
            "# TYPE x_total counter\n"
            "x_total{kind=\"a\"} 3\n"
            "x_total{kind=\"b\\\"\\\\\\n\"} 1\n"
            "# HELP depth Queue depth\\nnow\n"
            "# TYPE depth gauge\n"
            "depth 2.5\n"
            "# HELP took_seconds Time\n"
            "# TYPE took_seconds histogram\n"
            "took_seconds_bucket{le=\"0.1\"} 2\n"
            "took_seconds_bucket{le=\"1\"} 2\n"
            "took_seconds_bucket{le=\"+Inf\"} 3\n"
            "took_seconds_sum 3.15\n"
            "took_seconds_count 3\n");
}

TEST(MetricsTest, BadNamesAndMixedTypesAreRefused) {
  Registry r;
  EXPECT_THROW(r.counter("1abc", "x"), InvalidArgument);
  EXPECT_THROW(r.counter("a-b", "x"), InvalidArgument);
  EXPECT_THROW(r.counter("ok", "x", {{"bad-label", "v"}}), InvalidArgument);
  r.counter("n_total", "x");
  EXPECT_THROW(r.gauge("n_total", "x", [] { return 1.0; }), InvalidArgument);
  EXPECT_THROW(r.histogram("h", "x", {1}, {{"le", "2"}}), InvalidArgument);
  EXPECT_THROW(Histogram({2, 1}), InvalidArgument);
}

TEST(MetricsTest, DurationBucketsSpanMillisecondsToTheMaximum) {
  auto b = duration_buckets(0.001, 10);
  ASSERT_EQ(b.size(), 13u);
  EXPECT_DOUBLE_EQ(b.front(), 0.001);
  EXPECT_DOUBLE_EQ(b[1], 0.0025);
  EXPECT_DOUBLE_EQ(b.back(), 10);
  EXPECT_TRUE(std::is_sorted(b.begin(), b.end()));
}

}  // namespace
}  // namespace slimta::metrics
