#include "slimta/metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "slimta/errors.h"

namespace slimta::metrics {
namespace {

bool valid_name(const std::string& name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
              (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

// A sample value: integers as integers, +Inf/-Inf/NaN as Prometheus spells them.
std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return fmt::format("{}", static_cast<int64_t>(v));
  return fmt::format("{}", v);
}

std::string escape(const std::string& s, bool quotes) {
  std::string out;
  for (char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && quotes) {
      out += "\\\"";
    } else {
      out += c;
    }
  }
  return out;
}

std::string label_text(const Labels& labels, const std::string& extra_name = "",
                       const std::string& extra_value = "") {
  std::string out;
  auto add = [&](const std::string& k, const std::string& v) {
    out += (out.empty() ? "{" : ",") + k + "=\"" + escape(v, true) + "\"";
  };
  for (const auto& [k, v] : labels) add(k, v);
  if (!extra_name.empty()) add(extra_name, extra_value);
  return out.empty() ? out : out + "}";
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  if (!std::is_sorted(bounds_.begin(), bounds_.end()))
    throw InvalidArgument("histogram bounds must be ascending");
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0);
}

void Histogram::observe(double value) {
  size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

std::vector<uint64_t> Histogram::counts() const {
  std::vector<uint64_t> out(bounds_.size() + 1);
  for (size_t i = 0; i < out.size(); ++i) out[i] = counts_[i].load(std::memory_order_relaxed);
  return out;
}

std::vector<double> duration_buckets(double min_seconds, double max_seconds) {
  std::vector<double> out;
  int first = static_cast<int>(std::floor(std::log10(min_seconds) + 1e-9));
  int last = static_cast<int>(std::floor(std::log10(max_seconds) + 1e-9));
  for (int k = first; k <= last; ++k) {
    for (double step : {1.0, 2.5, 5.0}) {
      double bound = step * std::pow(10.0, k);
      if (bound >= min_seconds * (1 - 1e-9) && bound <= max_seconds * (1 + 1e-9))
        out.push_back(bound);
    }
  }
  return out;
}

struct Registry::Family {
  std::string name, help, type;
  struct Series {
    Labels labels;
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Histogram> histogram;
    std::function<double()> read;
  };
  std::vector<Series> series;
  std::function<Samples()> collect;  // gauges(): the series of each scrape

  Series* find(const Labels& labels) {
    for (auto& s : series)
      if (s.labels == labels) return &s;
    return nullptr;
  }
  Series& add(const Labels& labels) {
    for (const auto& [k, v] : labels) {
      if (!valid_name(k) || k.starts_with("__"))
        throw InvalidArgument("metric " + name + ": invalid label name '" + k + "'");
    }
    series.push_back(Series{labels, nullptr, nullptr, nullptr});
    return series.back();
  }
};

Registry::Registry() = default;
Registry::~Registry() = default;

Registry::Family& Registry::family(const std::string& name, const std::string& help,
                                   const char* type) {
  if (!valid_name(name)) throw InvalidArgument("invalid metric name '" + name + "'");
  for (auto& f : families_) {
    if (f->name != name) continue;
    if (f->type != type) {
      throw InvalidArgument("metric " + name + " is a " + f->type + ", not a " + type);
    }
    return *f;
  }
  families_.push_back(std::make_unique<Family>(Family{name, help, type, {}, {}}));
  return *families_.back();
}

Counter& Registry::counter(const std::string& name, const std::string& help, const Labels& labels) {
  std::lock_guard lock(mu_);
  Family& f = family(name, help, "counter");
  if (auto* s = f.find(labels); s && s->counter) return *s->counter;
  auto& s = f.add(labels);
  s.counter = std::make_unique<Counter>();
  return *s.counter;
}

Histogram& Registry::histogram(const std::string& name, const std::string& help,
                               const std::vector<double>& bounds, const Labels& labels) {
  std::lock_guard lock(mu_);
  Family& f = family(name, help, "histogram");
  if (auto* s = f.find(labels); s && s->histogram) return *s->histogram;
  for (const auto& [k, v] : labels)
    if (k == "le") throw InvalidArgument("metric " + name + ": 'le' is the histogram's own label");
  auto& s = f.add(labels);
  s.histogram = std::make_unique<Histogram>(bounds);
  return *s.histogram;
}

void Registry::gauge(const std::string& name, const std::string& help,
                     std::function<double()> value, const Labels& labels) {
  std::lock_guard lock(mu_);
  Family& f = family(name, help, "gauge");
  if (f.find(labels)) throw InvalidArgument("metric " + name + ": series registered twice");
  f.add(labels).read = std::move(value);
}

void Registry::gauges(const std::string& name, const std::string& help,
                      std::function<Samples()> collect) {
  std::lock_guard lock(mu_);
  Family& f = family(name, help, "gauge");
  if (f.collect || !f.series.empty())
    throw InvalidArgument("metric " + name + ": series registered twice");
  f.collect = std::move(collect);
}

std::string Registry::render() const {
  std::lock_guard lock(mu_);
  std::string out;
  for (const auto& f : families_) {
    out += "# HELP " + f->name + " " + escape(f->help, false) + "\n";
    out += "# TYPE " + f->name + " " + f->type + "\n";
    if (f->collect) {
      for (const auto& [labels, value] : f->collect()) {
        bool ok = std::all_of(labels.begin(), labels.end(), [](const auto& kv) {
          return valid_name(kv.first) && !kv.first.starts_with("__");
        });
        if (ok) out += f->name + label_text(labels) + " " + number(value) + "\n";
      }
    }
    for (const auto& s : f->series) {
      if (s.histogram) {
        std::vector<uint64_t> counts = s.histogram->counts();
        const auto& bounds = s.histogram->bounds();
        uint64_t cumulative = 0;
        for (size_t i = 0; i < counts.size(); ++i) {
          cumulative += counts[i];
          std::string le = i < bounds.size() ? number(bounds[i]) : "+Inf";
          out += f->name + "_bucket" + label_text(s.labels, "le", le) + " " +
                 std::to_string(cumulative) + "\n";
        }
        out += f->name + "_sum" + label_text(s.labels) + " " + number(s.histogram->sum()) + "\n";
        out += f->name + "_count" + label_text(s.labels) + " " + std::to_string(cumulative) + "\n";
      } else {
        double v = s.counter ? static_cast<double>(s.counter->value()) : s.read();
        out += f->name + label_text(s.labels) + " " + number(v) + "\n";
      }
    }
  }
  return out;
}

}  // namespace slimta::metrics
