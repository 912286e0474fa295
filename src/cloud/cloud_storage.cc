// The cloud backend. Why it is built this way:
//
// * One S3 object per message, PREFIX+ID, holding the stored record (doc/format.md)
//   with its current metadata. A metadata update is GET + PUT If-Match: ETAG (2
//   requests); a 412 means another writer changed the object first, so the update
//   starts over from a fresh read: no update is lost (the python original set
//   metadata on a local object and never sent it).
// * write() is PUT If-None-Match: *. The id is chosen before the request, so when a
//   retry finds the object there (412), the first attempt stored it: done.
// * A write whose answer was lost (the PUT and its retries went unanswered) is settled
//   before write() answers (core/unsettled_writes.h): a tombstone object PUT If-None-Match:
//   * at the message's key either lands first (then the write never can: its own PUT is
//   If-None-Match: * too) or finds the message there. Readers take the tombstone for no
//   message.
// * The SQS notice is sent after the object is stored; if it fails the message is
//   still stored and load() finds it, so the failure is logged, not raised.
// * load() reads only the first 4 KiB of each object (a Range GET): the record keeps
//   its metadata first.
// * Leases and holds are metadata fields of the record, so claim() and every fenced
//   mutation are the same If-Match read-modify-write (expiry judged by this host's
//   clock: keep the hosts in NTP sync). A fenced remove() is GET, check, DELETE
//   If-Match, so a claim that slipped in between makes it start over.
// * With SQS, a message's notice is its schedule (the due index): sent with
//   DelaySeconds until its time (at most 900 s), it is left in the queue when received
//   by due(), hidden (VisibilityTimeout) for the hand-out; the receiver keeps its
//   receipt so that a deferral hides it until the next attempt (ChangeMessageVisibility,
//   up to 12 h; a notice that shows up before its time is hidden again), a renewal
//   extends it, and the removal deletes it. A notice whose message is gone or held is
//   deleted by the claim that finds so (release_hold() sends a new one). So a waiting
//   message costs no S3 request; a notice lost (SendMessage failed after the PUT) is
//   found by the sweep (repair_due), which reads only objects not rewritten for
//   `stale_after`: a message being attempted is rewritten at every attempt.
// * With SQS, stats() counts marks, not messages (cloud/stats_marks.h). A mark is PUT
//   after the message's own write and DELETEd after its removal, so a crash leaves a
//   message without its mark or a mark without its message: the sweep puts right the
//   marks of each page of messages it lists.
#include "slimta/cloud_storage.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <ctime>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>
#include <unordered_map>

#include "cloud/http.h"
#include "cloud/stats_marks.h"
#include "core/counters_text.h"
#include "core/metadata_ops.h"
#include "core/paged_stream.h"
#include "core/record.h"
#include "core/unsettled_writes.h"

namespace slimta {

namespace {

constexpr int kMaxCasRounds = 64;
// The body of a tombstone: never a record (doc/format.md records start otherwise).
constexpr std::string_view kTombstone = "slimta: a write taken back\n";
// How long a mark without its message is left alone by the sweep (or `stale_after`, if
// shorter): it may be the mark of a message written since the sweep listed the messages.
constexpr double kMarkGrace = 60;

}  // namespace

struct CloudStorage::Impl {
  Impl(SimpleStorageService s3, std::vector<SimpleQueueService> queues, const Clock& clock,
       double stale_after)
      : s3(std::move(s3)), queues(std::move(queues)), clock(clock), stale_after(stale_after) {}

  SimpleStorageService s3;
  std::vector<SimpleQueueService> queues;  // none: no notices, no due index
  const Clock& clock;
  double stale_after;
  double resolve_timeout = 0;
  std::atomic<size_t> next_queue{0};  // where due() and wait() read next

  bool has_queue() const { return !queues.empty(); }
  // The queue the notices of `id` go to (FNV-1a of the id: the same in every process).
  SimpleQueueService& queue_of(std::string_view id) {
    uint32_t h = 2166136261u;
    for (unsigned char c : id) h = (h ^ c) * 16777619u;
    return queues[h % queues.size()];
  }

  // The notices this object received through due() and holds (their receipts), by id.
  struct Held {
    std::string message_id, handle;
    size_t queue = 0;  // which of `queues` it came from
    Timestamp received = 0;
    Timestamp hidden_until = 0;  // what hide_notice_until() asked last
  };
  std::mutex notices_mu;
  std::unordered_map<std::string, Held> notices;

  // Seconds from now until `t`, as SQS takes them (whole, at least 0, rounded up).
  int seconds_until(Timestamp t) const {
    return static_cast<int>(std::clamp(std::ceil(t - clock.now()), 0.0, 43200.0));
  }
  std::optional<Held> held_notice(std::string_view id) {
    std::lock_guard lock(notices_mu);
    auto it = notices.find(std::string(id));
    if (it == notices.end()) return std::nullopt;
    return it->second;
  }
  // The message is gone or held: its notice (if this object holds it) goes too.
  void drop_notice(std::string_view id) {
    std::optional<Held> held;
    {
      std::lock_guard lock(notices_mu);
      auto it = notices.find(std::string(id));
      if (it == notices.end()) return;
      held = std::move(it->second);
      notices.erase(it);
    }
    try {
      queues[held->queue].delete_message(held->handle);
    } catch (const QueueError& e) {  // it shows up again, and its claim finds out
      spdlog::warn("cloud: {}: could not delete its SQS notice: {}", id, e.what());
    }
  }
  // Hides the notice of `id` (if this object holds it) until `t`; a receipt can hide
  // for 12 h from its receipt at most: later, the notice shows up early and due() hides
  // it again.
  void hide_notice_until(std::string_view id, Timestamp t) {
    std::optional<Held> held = held_notice(id);
    if (!held || held->hidden_until == t) return;  // a deferral, then its release
    double left = 43200 - (clock.now() - held->received) - 60;
    int seconds = std::min(seconds_until(t), static_cast<int>(std::max(0.0, left)));
    try {
      bool hidden = queues[held->queue].change_visibility(held->handle, seconds);
      std::lock_guard lock(notices_mu);
      auto it = notices.find(std::string(id));
      if (it == notices.end() || it->second.handle != held->handle) return;
      if (hidden) {
        it->second.hidden_until = t;
      } else {
        notices.erase(it);
      }
    } catch (const QueueError& e) {  // it shows up at the end of its hand-out instead
      spdlog::warn("cloud: {}: could not hide its SQS notice: {}", id, e.what());
    }
  }

  std::string key(std::string_view id) const { return s3.prefix() + std::string(id); }

  cloud::StatsMarks marks{s3};  // kept with a message queue
  // Puts right the marks of one message of the sweep's page. Returns its metadata when
  // it read it (to see whether the message is due), nullopt when not or it is gone.
  std::optional<record::Metadata> mend_marks(const std::string& id,
                                             const cloud::StatsMarks::Of& found, bool stale);
  // The message object at `k` (or its first `max_bytes`); nullopt if none, or a tombstone.
  std::optional<SimpleStorageService::Object> message(const std::string& k, size_t max_bytes = 0) {
    auto obj = s3.get(k, max_bytes);
    if (obj && obj->body == kTombstone) return std::nullopt;
    return obj;
  }
  // See UnsettledWrites: the tombstone, or the message found in its place.
  bool settle(std::string_view id, bool take_back) {
    std::string k = key(id);
    for (int round = 0; round < kMaxCasRounds; ++round) {
      if (s3.put(k, std::string(kTombstone), "")) return false;  // first: the write never lands
      auto obj = s3.get(k);
      if (!obj) continue;  // removed meanwhile: tombstone it
      if (obj->body == kTombstone) return false;
      if (!take_back) return true;
      if (record::decode_message(obj->body, where(k)).meta.lease.token != 0) return true;
      if (s3.remove(k, obj->etag)) continue;  // taken back: now the tombstone
    }
    throw CloudStorageError::temporary("S3 object " + k +
                                       " kept changing while settling its write");
  }
  UnsettledWrites unsettled{
      "s3", [this](std::string_view id, bool take_back) { return settle(id, take_back); }};
  // "s3://BUCKET/KEY", naming an object in errors.
  std::string where(const std::string& k) const { return "s3://" + s3.bucket() + "/" + k; }

  // Runs `step` (which returns true when done, false when another writer got in
  // between) until it is done, with a short random pause between rounds.
  template <typename Step>
  void cas_loop(const std::string& k, Step&& step) {
    thread_local std::mt19937 rng(std::random_device{}());
    for (int round = 0; round < kMaxCasRounds; ++round) {
      if (step()) return;
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % (1000 * (round + 1))));
    }
    throw CloudStorageError::temporary("S3 object " + k + " kept changing under " +
                                       std::to_string(kMaxCasRounds) + " attempts to update it");
  }

  // The metadata of the object at `k` from its first 4 KiB (the record keeps it first),
  // or from the whole object when it is longer; nullopt if the object is gone.
  // CorruptRecord if it cannot be decoded.
  std::optional<record::Metadata> read_metadata(const std::string& k) {
    auto obj = message(k, record::kPrefixSize);
    if (!obj) return std::nullopt;
    if (auto p = record::decode_prefix(obj->body, where(k))) return p->meta;
    if (!(obj = message(k))) return std::nullopt;
    return record::decode(obj->body, where(k)).meta;
  }

  // Read-modify-write of a message's metadata with If-Match; an update that changes
  // nothing (a busy claim) is not written.
  template <typename Fn>
  auto update(std::string_view id, Fn&& fn) {
    std::string k = key(id);
    std::optional<decltype(fn(std::declval<record::Metadata&>()))> result;
    cas_loop(k, [&] {
      auto obj = message(k);
      if (!obj) throw KeyError(std::string(id));
      record::Message m = record::decode_message(std::move(obj->body), where(k));
      const record::Metadata before = m.meta;
      result = fn(m.meta);
      return m.meta == before || s3.put(k, record::encode(m.meta, &m.envelope), obj->etag);
    });
    return *result;
  }

  class Stream;
};

class CloudStorage::Impl::Stream : public PagedStream {
 public:
  explicit Stream(Impl& impl) : impl_(impl) {}

 private:
  static constexpr size_t kParallel = 16;

  // One ListObjectsV2 page, then the metadata of its objects.
  bool fetch(std::vector<QueueEntry>& batch) override {
    auto page = impl_.s3.list(token_);
    token_ = page.next;
    const std::string& prefix = impl_.s3.prefix();
    std::vector<std::string> ids;
    for (const auto& k : page.keys) {
      if (k.starts_with(impl_.marks.first())) {  // the marks list last: every message was listed
        token_.clear();
        break;
      }
      if (k.starts_with(prefix) && is_valid_id(std::string_view(k).substr(prefix.size()))) {
        ids.push_back(k.substr(prefix.size()));
      }
    }
    // The first 4 KiB of each object, kParallel requests at a time.
    std::vector<std::optional<QueueEntry>> found(ids.size());
    std::vector<std::exception_ptr> errors(ids.size());
    std::atomic<size_t> next{0};
    std::atomic<size_t> corrupt{0};
    std::vector<std::thread> workers;
    for (size_t t = 0; t < std::min(kParallel, ids.size()); ++t) {
      workers.emplace_back([&] {
        for (size_t i; (i = next++) < ids.size();) {
          try {
            auto meta = impl_.read_metadata(impl_.key(ids[i]));
            if (!meta) continue;  // removed since the listing
            found[i] = QueueEntry{meta->timestamp, ids[i]};
          } catch (const CorruptRecord& e) {
            ++corrupt;
            spdlog::error("{}; left in place", e.what());
          } catch (...) {
            errors[i] = std::current_exception();
          }
        }
      });
    }
    for (auto& w : workers) w.join();
    for (auto& e : errors) {
      if (e) std::rethrow_exception(e);
    }
    corrupt_ += corrupt;
    for (auto& f : found) {
      if (f) batch.push_back(std::move(*f));
    }
    return !token_.empty();
  }

  Impl& impl_;
  std::string token_;
};

namespace {
std::vector<SimpleQueueService> queue_list(std::optional<SimpleQueueService> queue) {
  std::vector<SimpleQueueService> list;
  if (queue) list.push_back(std::move(*queue));
  return list;
}
}  // namespace

CloudStorage::CloudStorage(SimpleStorageService object_store,
                           std::optional<SimpleQueueService> message_queue, const Clock& clock,
                           double stale_after, std::optional<double> resolve_timeout)
    : CloudStorage(std::move(object_store), queue_list(std::move(message_queue)), clock,
                   stale_after, resolve_timeout) {}

CloudStorage::CloudStorage(SimpleStorageService object_store,
                           std::vector<SimpleQueueService> message_queues, const Clock& clock,
                           double stale_after, std::optional<double> resolve_timeout) {
  if (!(stale_after > 0)) throw InvalidArgument("stale_after must be more than 0 seconds");
  if (resolve_timeout && !(*resolve_timeout >= 0))
    throw InvalidArgument("resolve_timeout must be 0 seconds or more");
  impl_ = std::make_unique<Impl>(std::move(object_store), std::move(message_queues), clock,
                                 stale_after);
  impl_->resolve_timeout = resolve_timeout.value_or(impl_->s3.timeout());
  set_shaping_clock(clock);
}

CloudStorage::~CloudStorage() = default;

Capabilities CloudStorage::capabilities() const {
  return Capabilities{.can_wait = impl_->has_queue(),
                      .shared = true,
                      .durable = true,
                      .can_lease = true,
                      .due_index = impl_->has_queue()};
}

std::string CloudStorage::write(const Envelope& envelope, Timestamp timestamp) {
  std::string id = new_message_id();
  std::string k = impl_->key(id);
  // false: the object exists, so an earlier attempt of this very call stored it.
  try {
    impl_->s3.put(k, record::encode(record::initial_metadata(envelope, timestamp), &envelope), "");
  } catch (const CloudStorageError& e) {
    if (!e.answer_lost()) throw;  // every attempt answered (refused): nothing stored
    if (!impl_->unsettled.resolve(id, e.what(), impl_->resolve_timeout))
      throw QueueError("S3: message " + id + " was not stored (" + e.what() + ")", true);
  }
  if (impl_->has_queue()) {
    impl_->marks.put(impl_->marks.received(id, envelope.timestamp));
    try {
      impl_->queue_of(id).queue_message(id, timestamp, impl_->seconds_until(timestamp));
    } catch (const QueueError& e) {
      spdlog::warn("message {} is stored but its SQS notice failed ({}); load() will find it", id,
                   e.what());
    }
  }
  return id;
}

void CloudStorage::do_set_timestamp(std::string_view id, Timestamp timestamp, Fence fence,
                                    std::string_view last_reply,
                                    std::span<const RecipientReply> deferred) {
  impl_->update(id, record::ops::set_timestamp(timestamp, fence, id, last_reply, deferred));
  if (impl_->has_queue()) impl_->hide_notice_until(id, timestamp);
}

uint32_t CloudStorage::do_increment_attempts(std::string_view id, Fence fence) {
  return impl_->update(id, record::ops::increment_attempts(fence, id));
}

void CloudStorage::do_set_recipients_delivered(std::string_view id,
                                               std::span<const size_t> rcpt_indexes, Fence fence,
                                               std::span<const RecipientFailure> failed) {
  impl_->update(id, record::ops::set_recipients_delivered(rcpt_indexes, fence, id, failed));
}

ClaimResult CloudStorage::do_claim(std::string_view id, std::chrono::milliseconds duration) {
  // A message this object refused (its write went unanswered) and has not settled yet
  // may have landed since: it is taken back before this process could deliver it.
  if (impl_->unsettled.taken_back_if_in_doubt(id)) throw KeyError(std::string(id));
  ClaimResult r;
  try {
    r = impl_->update(id, record::ops::claim(impl_->clock.now(), duration));
  } catch (const KeyError&) {
    if (impl_->has_queue()) impl_->drop_notice(id);  // a notice of a message gone
    throw;
  }
  if (r.status == ClaimResult::Status::held && impl_->has_queue()) impl_->drop_notice(id);
  return r;
}

void CloudStorage::do_release(std::string_view id, Fence fence) {
  Timestamp next = 0;
  impl_->update(id, [&](record::Metadata& m) {
    next = m.timestamp;
    return record::ops::release(fence, id)(m);
  });
  // Released before its time (found rescheduled): its notice waits until then.
  if (impl_->has_queue() && next > impl_->clock.now()) impl_->hide_notice_until(id, next);
}

Lease CloudStorage::do_renew(std::string_view id, Fence fence, std::chrono::milliseconds duration) {
  Lease lease = impl_->update(id, record::ops::renew(fence, impl_->clock.now(), duration, id));
  if (impl_->has_queue()) impl_->hide_notice_until(id, lease.expires);  // the hand-out goes on
  return lease;
}

void CloudStorage::do_hold(std::string_view id, std::string_view reason, Timestamp since) {
  impl_->update(id, record::ops::hold(reason, since));
  if (impl_->has_queue()) {
    impl_->marks.put(impl_->marks.held(id));
    impl_->drop_notice(id);
  }
}

void CloudStorage::do_announce(std::string_view id, Timestamp timestamp) {
  if (impl_->has_queue())
    impl_->queue_of(id).queue_message(id, timestamp, impl_->seconds_until(timestamp));
}

void CloudStorage::do_release_hold(std::string_view id) {
  Timestamp next = 0;
  bool was_held = false;
  impl_->update(id, [&](record::Metadata& m) {
    was_held = m.hold.has_value();
    next = m.timestamp;
    return record::ops::release_hold()(m);
  });
  if (!was_held) return;
  if (impl_->has_queue()) impl_->marks.remove(impl_->marks.held(id));
  announce(id, next);  // its notice went when it was held
}

// One object, PREFIX.counters, in the text form of core/counters_text.h, updated with
// If-Match (If-None-Match: * when it does not exist yet).
void CloudStorage::add_counters(const Counters& delta) {
  std::string k = impl_->s3.prefix() + ".counters";
  impl_->cas_loop(k, [&] {
    auto obj = impl_->s3.get(k);
    Counters sum = obj ? parse_counters(obj->body, impl_->where(k)) : Counters{};
    for (const auto& [name, n] : delta) sum[name] += n;
    return impl_->s3.put(k, format_counters(sum), obj ? obj->etag : "");
  });
}

Counters CloudStorage::counters() {
  std::string k = impl_->s3.prefix() + ".counters";
  auto obj = impl_->s3.get(k);
  return obj ? parse_counters(obj->body, impl_->where(k)) : Counters{};
}

std::unique_ptr<EntryStream> CloudStorage::load() { return std::make_unique<Impl::Stream>(*impl_); }

QueuedMessage CloudStorage::do_get(std::string_view id) {
  std::string k = impl_->key(id);
  auto obj = impl_->message(k);
  if (!obj) throw KeyError(std::string(id));
  record::Message m = record::decode_message(std::move(obj->body), impl_->where(k));
  return record::to_queued(std::move(m.envelope), m.meta);
}

void CloudStorage::do_remove(std::string_view id, Fence fence) {
  std::string k = impl_->key(id);
  if (fence.token == 0) {
    impl_->s3.remove(k);
    if (impl_->has_queue()) impl_->marks.remove_all(id);
  } else {
    // GET, check the fence, DELETE If-Match: a claim in between changes the ETag.
    std::optional<record::Message> removed;
    impl_->cas_loop(k, [&] {
      auto obj = impl_->message(k);
      if (!obj) return true;
      removed = record::decode_message(std::move(obj->body), impl_->where(k));
      record::check_fence(removed->meta, fence, id);
      return impl_->s3.remove(k, obj->etag);
    });
    if (removed && impl_->has_queue()) {
      impl_->marks.remove(impl_->marks.received(id, removed->envelope.timestamp));
      if (removed->meta.hold) impl_->marks.remove(impl_->marks.held(id));
    }
  }
  if (impl_->has_queue()) impl_->drop_notice(id);
}

std::vector<QueueEntry> CloudStorage::do_due(Timestamp now, size_t limit,
                                             std::chrono::milliseconds hand_out) {
  if (!impl_->has_queue())
    throw NotSupported("CloudStorage without a message queue has no due index");
  int visibility = static_cast<int>(
      std::clamp(std::ceil(std::chrono::duration<double>(hand_out).count()), 1.0, 43200.0));
  std::vector<QueueEntry> out;
  std::set<std::string> taken;
  // At most 10 notices a receive, and up to 10 receives a call, the queues read in turn
  // (where the last call stopped): the rest waits for the next call. A call stops early
  // once every queue came back empty in a row.
  const size_t count = impl_->queues.size();
  size_t at = impl_->next_queue.load(), empty_in_a_row = 0;
  for (int round = 0; round < 10 && out.size() < limit && empty_in_a_row < count; ++round) {
    size_t q = at++ % count;
    SimpleQueueService& queue = impl_->queues[q];
    auto got =
        queue.receive(static_cast<int>(std::min<size_t>(10, limit - out.size())), visibility);
    empty_in_a_row = got.empty() ? empty_in_a_row + 1 : 0;
    for (auto& n : got) {
      const std::string& id = n.entry.id;
      if (n.entry.timestamp > now) {  // shown before its time (a wait beyond 900 s)
        int seconds =
            static_cast<int>(std::clamp(std::ceil(n.entry.timestamp - now), 0.0, 43200.0));
        queue.change_visibility(n.handle, seconds);
        continue;
      }
      std::optional<Impl::Held> older;  // another notice of the same message: one is enough
      {
        std::lock_guard lock(impl_->notices_mu);
        auto [it, fresh] = impl_->notices.try_emplace(id);
        if (!fresh && it->second.message_id != n.message_id) older = it->second;
        it->second = {n.message_id, n.handle, q, impl_->clock.now()};
      }
      if (older) {
        try {
          impl_->queues[older->queue].delete_message(older->handle);
        } catch (const QueueError& e) {
          spdlog::warn("cloud: {}: could not delete a second SQS notice: {}", id, e.what());
        }
      }
      if (taken.insert(id).second) out.push_back(n.entry);
    }
  }
  impl_->next_queue = at;
  return out;
}

std::optional<record::Metadata> CloudStorage::Impl::mend_marks(const std::string& id,
                                                               const cloud::StatsMarks::Of& found,
                                                               bool stale) {
  std::string k = key(id);
  std::optional<record::Metadata> meta;
  if (found.received.empty()) {  // written before marks were kept, or its PUT was lost
    auto obj = message(k);
    if (!obj) return std::nullopt;
    record::Message m = record::decode_message(std::move(obj->body), where(k));
    marks.put(marks.received(id, m.envelope.timestamp));
    spdlog::info("cloud: {} had no stats mark: marked", id);
    meta = std::move(m.meta);
  } else if (stale || found.held) {
    if (!(meta = read_metadata(k))) return std::nullopt;
  } else {
    return std::nullopt;
  }
  if (meta->hold.has_value() && !found.held) marks.put(marks.held(id));
  if (!meta->hold.has_value() && found.held) marks.remove(marks.held(id));
  return meta;
}

size_t CloudStorage::repair_due(std::string& cursor) {
  if (!impl_->has_queue())
    throw NotSupported("CloudStorage without a message queue has no due index");
  // The cursor is the last key (after the prefix) of the page before.
  const std::string& prefix = impl_->s3.prefix();
  auto page = impl_->s3.list("", "", cursor.empty() ? "" : prefix + cursor);
  Timestamp now = impl_->clock.now();
  // The last id this page covers; none: to the end (the last page, or the marks begin).
  std::optional<std::string> last;
  const bool marks_reached =
      !page.keys.empty() && page.keys.back().starts_with(impl_->marks.first());
  if (!page.next.empty() && !page.keys.empty() && !marks_reached)
    last = page.keys.back().substr(prefix.size());
  cloud::StatsMarks::Listed marks = impl_->marks.between(cursor, last);
  std::set<std::string> listed;
  size_t announced = 0;
  for (size_t i = 0; i < page.keys.size(); ++i) {
    const std::string& k = page.keys[i];
    std::string id = k.substr(prefix.size());
    if (!is_valid_id(id)) continue;
    listed.insert(id);
    bool stale = page.modified[i] <= now - impl_->stale_after;
    try {
      auto meta = impl_->mend_marks(id, marks.by_id[id], stale);
      if (!stale || !meta || meta->hold || meta->timestamp > now)
        continue;  // fresh, gone, held or not due
      announce(id, meta->timestamp);
      ++announced;
      spdlog::info("cloud: {} was due since {:.0f} s and untouched for {:.0f} s: announced again",
                   id, now - meta->timestamp, now - page.modified[i]);
    } catch (const CorruptRecord& e) {
      spdlog::error("{}; left in place", e.what());
    }
  }
  // A mark whose message this page does not list, and older than any message written
  // since the listing: its message is gone (a removal that did not finish).
  for (const auto& [k, modified] : marks.keys) {
    if (listed.contains(*impl_->marks.id_of(k)) ||
        modified > now - std::min(kMarkGrace, impl_->stale_after))
      continue;
    impl_->marks.remove(k);
    spdlog::info("cloud: {}: its message is gone: deleted", k);
  }
  cursor = last.value_or("");
  return announced;
}

std::optional<QueueStats> CloudStorage::stats() {
  if (!impl_->has_queue()) return std::nullopt;
  return impl_->marks.count();
}

std::vector<QueueEntry> CloudStorage::do_wait(std::chrono::milliseconds timeout) {
  if (!impl_->has_queue())
    throw NotSupported("CloudStorage without a message queue cannot wait() for new messages");
  auto deadline = std::chrono::steady_clock::now() + timeout;
  const size_t count = impl_->queues.size();
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::seconds>(deadline -
                                                                 std::chrono::steady_clock::now());
    // One queue is long-polled up to 20 s; several are each polled up to 1 s in turn.
    int wait_s = static_cast<int>(std::clamp<int64_t>(left.count(), 0, count == 1 ? 20 : 1));
    SimpleQueueService& q = impl_->queues[impl_->next_queue++ % count];
    std::vector<QueueEntry> out = q.poll(wait_s);
    if (!out.empty() || std::chrono::steady_clock::now() >= deadline) return out;
    if (wait_s == 0) {
      auto pause =
          std::min(std::chrono::duration<double>(q.poll_pause() / static_cast<double>(count)),
                   std::chrono::duration<double>(deadline - std::chrono::steady_clock::now()));
      if (pause.count() > 0) std::this_thread::sleep_for(pause);
    }
  }
}

std::map<std::string, uint64_t> CloudStorage::request_counts() const {
  auto counts = impl_->s3.request_counts();
  for (const auto& queue : impl_->queues)
    for (const auto& [k, v] : queue.request_counts()) counts[k] += v;
  return counts;
}

}  // namespace slimta
