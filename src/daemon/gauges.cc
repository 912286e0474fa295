#include "gauges.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>

#include "admin/format.h"

namespace slimta::daemon {

using admin::now;

namespace {
using Steady = std::chrono::steady_clock;
// How often stats() is asked: a minute, the resolution queue depth is watched at,
// costs a node with --http 1 request a minute (4 Redis commands: the script and its
// calls) against the 70 to 130 its due polling and sweeps make (doc/costs.md).
constexpr auto kCountEvery = std::chrono::seconds(60);
// How long after the page was last asked for it counts as open (it reloads every 30 s).
constexpr auto kPageOpen = std::chrono::minutes(5);
double seconds_since(Steady::time_point t) {
  return std::chrono::duration<double>(Steady::now() - t).count();
}
}  // namespace

QueueGauges::QueueGauges(QueueStorage& storage) : storage_(storage), thread_([this] { run(); }) {}

QueueGauges::~QueueGauges() {
  stop_ = true;
  thread_.join();
}

double QueueGauges::messages() const {
  std::lock_guard lock(mu_);
  return snapshot_.messages;
}

double QueueGauges::held() const {
  std::lock_guard lock(mu_);
  return snapshot_.held;
}

double QueueGauges::count_seconds() const {
  std::lock_guard lock(mu_);
  return snapshot_.count_seconds;
}

double QueueGauges::oldest_age() const {
  std::lock_guard lock(mu_);
  double oldest = snapshot_.oldest;
  return oldest > 0 ? std::max(0.0, now() - oldest) : 0;
}

QueueSnapshot QueueGauges::snapshot() const {
  auto now = Steady::now();
  auto before =
      Steady::time_point(Steady::duration(wanted_.exchange(now.time_since_epoch().count())));
  // A first look, or the first in a while: scan now, not at the next count.
  if (before.time_since_epoch().count() == 0 || now - before >= kPageOpen) woken_ = true;
  std::lock_guard lock(mu_);
  return snapshot_;
}

// One loop: a count when one is due (stats(); the scan where there is none), a scan when
// the page is open and the last one is old enough; between, it sleeps until the next of
// those, or until the page is asked for (snapshot()).
void QueueGauges::run() {
  auto next_count = Steady::now(), next_scan = Steady::now();
  bool counted = true;  // whether the storage has stats()
  while (!stop_) {
    const bool woken = woken_.exchange(false);
    // The destinations' state with each count, and when the page is first looked at: a
    // few requests a minute (doc/costs.md), however many destinations are idle.
    if (woken || Steady::now() >= next_count) look_at_destinations();
    if (Steady::now() >= next_count) {
      counted = count();
      next_count = Steady::now() + kCountEvery;
    }
    auto wanted = Steady::time_point(Steady::duration(wanted_.load()));
    bool page_open = wanted.time_since_epoch().count() != 0 && Steady::now() - wanted < kPageOpen;
    if ((!counted || page_open) && Steady::now() >= next_scan) {
      double took = scan(/*figures=*/!counted);
      auto floor = counted ? std::chrono::seconds(30) : std::chrono::seconds(5);
      next_scan = Steady::now() +
                  std::max<Steady::duration>(floor, std::chrono::duration_cast<Steady::duration>(
                                                        std::chrono::duration<double>(10 * took)));
      if (!counted) next_count = next_scan;  // the scan counted
    }
    auto until = counted && !page_open ? next_count : std::min(next_count, next_scan);
    while (!stop_ && !woken_ && Steady::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

nlohmann::json QueueGauges::storage_info() const {
  std::lock_guard lock(mu_);
  return snapshot_.storage_info;
}

void QueueGauges::look_at_destinations() {
  try {
    nlohmann::json info = admin::storage_info_json(storage_);
    {
      std::lock_guard lock(mu_);
      snapshot_.storage_info = std::move(info);
    }
    auto board = storage_.destinations();
    if (!board) return;
    std::vector<DestinationStatus> all = board->status();
    Timestamp t = now();
    auto rank = [t](const DestinationStatus& s) {
      std::string state = admin::destination_state(s, t);
      return state == "ok" ? 1 : 0;  // the troubled first
    };
    std::stable_sort(all.begin(), all.end(), [&](const auto& a, const auto& b) {
      if (rank(a) != rank(b)) return rank(a) < rank(b);
      return a.in_use > b.in_use;
    });
    if (all.size() > QueueSnapshot::kMaxDestinations) all.resize(QueueSnapshot::kMaxDestinations);
    std::lock_guard lock(mu_);
    snapshot_.destinations = std::move(all);
  } catch (const QueueError& e) {
    spdlog::warn("http: the gauges could not read the destinations' state: {}", e.what());
  }
}

bool QueueGauges::count() {
  auto began = Steady::now();
  try {
    std::optional<QueueStats> stats = storage_.stats();
    if (!stats) return false;
    std::lock_guard lock(mu_);
    snapshot_.messages = static_cast<double>(stats->messages);
    snapshot_.held = static_cast<double>(stats->held);
    snapshot_.oldest = stats->oldest;
    snapshot_.count_seconds = seconds_since(began);
    snapshot_.taken = now();
  } catch (const QueueError& e) {
    spdlog::warn("http: the queue gauges could not count the queue: {}", e.what());
  }
  return true;
}

double QueueGauges::scan(bool figures) {
  auto began = Steady::now();
  try {
    QueueSnapshot next;
    admin::ShapeBuilder shape(now());
    auto stream = storage_.load();
    while (auto entry = stream->next()) {
      if (stop_) return seconds_since(began);
      try {
        QueuedMessage msg = storage_.get(entry->id);
        ++next.messages;
        shape.add(msg);
        if (msg.hold) {
          ++next.held;
          if (next.held_messages.size() < 50)
            next.held_messages.push_back(admin::message_json(entry->id, msg));
        }
        double received = msg.envelope.timestamp;
        if (received > 0 && (next.oldest == 0 || received < next.oldest)) next.oldest = received;
      } catch (const KeyError&) {
        // delivered since the listing
      }
    }
    std::lock_guard lock(mu_);
    snapshot_.shape = shape.finish();
    snapshot_.held_messages = std::move(next.held_messages);
    snapshot_.scanned = now();
    if (figures) {
      snapshot_.messages = next.messages;
      snapshot_.held = next.held;
      snapshot_.oldest = next.oldest;
      snapshot_.count_seconds = seconds_since(began);
      snapshot_.taken = snapshot_.scanned;
    }
  } catch (const QueueError& e) {
    spdlog::warn("http: the queue gauges could not scan the storage: {}", e.what());
  }
  return seconds_since(began);
}

StorageProbe::StorageProbe(QueueStorage& storage)
    : storage_(storage), thread_([this] {
        std::unique_lock lock(mu_);
        while (true) {
          cv_.wait(lock, [this] { return stop_ || asked_; });
          if (stop_) return;
          lock.unlock();
          std::string answer;
          try {
            storage_.get("slimta-readyz-probe");
          } catch (const KeyError&) {
            // the storage answered
          } catch (const QueueError& e) {
            answer = std::string("the storage is not reachable: ") + e.what();
          }
          lock.lock();
          answer_ = std::move(answer);
          asked_ = false;
          ++round_;
          cv_.notify_all();
        }
      }) {}

StorageProbe::~StorageProbe() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

std::string StorageProbe::check(std::chrono::milliseconds limit) {
  std::unique_lock lock(mu_);
  uint64_t round = round_;
  if (!asked_) {  // else join the question under way
    asked_ = true;
    cv_.notify_all();
  }
  if (!cv_.wait_for(lock, limit, [&] { return round_ != round; })) {
    return fmt::format("the storage did not answer within {} ms", limit.count());
  }
  return answer_;
}

// Each minute is closed within a second of its end, by a thread of its own.
Activity::Activity(metrics::Registry& registry)
    : counters_(delivery_counters(registry)), thread_([this] {
        std::unique_lock lock(mu_);
        while (!stop_cv_.wait_for(lock, std::chrono::seconds(1), [this] { return stop_; }))
          roll(now());
      }) {}

Activity::~Activity() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  thread_.join();
}

std::array<uint64_t, 4> Activity::totals() const {
  return {counters_.delivered.value(), counters_.deferred.value(), counters_.failed.value(),
          counters_.bounced.value()};
}

// Closes the minutes that ended: what the counters gained during each.
void Activity::roll(Timestamp t) {
  Timestamp minute = std::floor(t / 60) * 60;
  if (minutes_.empty()) {
    minutes_.push_back(Minute{minute});
    base_ = totals();
    return;
  }
  if (minutes_.back().start == minute) return;
  std::array<uint64_t, 4> now_totals = totals();
  Minute& closing = minutes_.back();
  closing.delivered = now_totals[0] - base_[0];
  closing.deferred = now_totals[1] - base_[1];
  closing.failed = now_totals[2] - base_[2];
  closing.bounced = now_totals[3] - base_[3];
  base_ = now_totals;
  for (Timestamp m = closing.start + 60; m <= minute; m += 60) minutes_.push_back(Minute{m});
  while (minutes_.size() > 60) minutes_.pop_front();
}

void Activity::on_event(const QueueEvent& event) {
  const auto* deferred = std::get_if<events::Deferred>(&event);
  if (!deferred) return;
  std::lock_guard lock(mu_);
  std::string reason = deferred->reply.substr(0, 120);
  if (!reasons_.count(reason) && reasons_.size() >= 100) reason = "(other replies)";
  ++reasons_[reason];
}

std::vector<Activity::Minute> Activity::last_hour() {
  std::lock_guard lock(mu_);
  roll(now());
  std::vector<Minute> out(minutes_.begin(), minutes_.end());
  std::array<uint64_t, 4> t = totals();  // the minute under way, so far
  out.back().delivered = t[0] - base_[0];
  out.back().deferred = t[1] - base_[1];
  out.back().failed = t[2] - base_[2];
  out.back().bounced = t[3] - base_[3];
  return out;
}

std::vector<std::pair<std::string, uint64_t>> Activity::top_deferrals(size_t n) {
  std::lock_guard lock(mu_);
  std::vector<std::pair<std::string, uint64_t>> out(reasons_.begin(), reasons_.end());
  std::stable_sort(out.begin(), out.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  if (out.size() > n) out.resize(n);
  return out;
}

void QueueGauges::register_metrics(metrics::Registry& registry) {
  const char* shared = " (the whole shared queue, the same on every node: aggregate with max())";
  registry.gauge("slimta_queue_messages", std::string("Messages queued") + shared,
                 [this] { return messages(); });
  registry.gauge("slimta_queue_held_messages", std::string("Messages held") + shared,
                 [this] { return held(); });
  registry.gauge("slimta_queue_oldest_message_age_seconds",
                 std::string("Age of the oldest queued message") + shared,
                 [this] { return oldest_age(); });
  registry.gauge("slimta_queue_scan_seconds",
                 "Time the last count of the queue for these gauges took (the storage's stats(), "
                 "or a scan of every message where it keeps none)",
                 [this] { return count_seconds(); });
  // Per destination, from the last look (every 10 s).
  auto per_destination = [this](const std::function<double(const DestinationStatus&)>& value) {
    return [this, value] {
      std::lock_guard lock(mu_);
      metrics::Registry::Samples out;
      for (const auto& s : snapshot_.destinations)
        out.push_back({{{"destination", s.name}}, value(s)});
      return out;
    };
  };
  registry.gauges("slimta_destination_in_use",
                  "Deliveries under way to each destination with state (all nodes)",
                  per_destination([](const DestinationStatus& s) { return double(s.in_use); }));
  registry.gauges("slimta_destination_failures",
                  "Unreachable attempts in a row, per destination (down past 3)",
                  per_destination([](const DestinationStatus& s) { return double(s.failures); }));
  registry.gauges(
      "slimta_destination_state",
      "1 for each destination's state now: ok, failing, down or suspended", [this] {
        std::lock_guard lock(mu_);
        metrics::Registry::Samples out;
        Timestamp t = now();
        for (const auto& s : snapshot_.destinations) {
          out.push_back(
              {{{"destination", s.name}, {"state", admin::destination_state(s, t)}}, 1.0});
        }
        return out;
      });
}

}  // namespace slimta::daemon
