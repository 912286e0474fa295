// CloudStorage: messages in S3 (one object per message), new-message notices in SQS
// (python's slimta.cloudstorage). Several processes and hosts may share one bucket.
//
// Metadata updates persist (the python original's did not) and never lose a concurrent
// update: read the object, change it, write it back with If-Match on the ETag, and
// start over if another writer got there first. write() stores with If-None-Match, so a
// retried write cannot store a message twice.
//
// Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN,
// or from ~/.aws/credentials (profile AWS_PROFILE, else "default"); they are never put
// in an error message or a log line. Requests are signed with AWS Signature Version 4.
//
// Thread safety: all methods may be called concurrently, except wait() (one thread).
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "slimta/clock.h"
#include "slimta/storage.h"

namespace slimta {

// S3 and SQS failures: temporary for 5xx, throttling and network errors (after the
// bounded retries the client already made), permanent for 403 and other 4xx, a missing
// bucket or queue, or no credentials.
class CloudStorageError : public QueueError {
 public:
  static CloudStorageError temporary(const std::string& what) { return {what, true}; }
  static CloudStorageError permanent(const std::string& what) { return {what, false}; }
  // Temporary, and a request that may have reached the service went unanswered: what it
  // asked may have been done (or may still be).
  static CloudStorageError unanswered(const std::string& what) { return {what, true, true}; }
  bool answer_lost() const { return unanswered_; }

 private:
  CloudStorageError(const std::string& what, bool retryable, bool unanswered = false)
      : QueueError(what, retryable), unanswered_(unanswered) {}
  bool unanswered_ = false;
};

struct AwsOptions {
  std::string region = "us-east-1";
  // Endpoint override for S3-compatible stores or a local server, e.g.
  // "http://127.0.0.1:9000". Empty: the AWS endpoint of the region.
  std::string endpoint;
  // Explicit credentials; empty: from the environment or ~/.aws/credentials.
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;
  std::string profile;  // ~/.aws/credentials profile; empty: $AWS_PROFILE or "default"
};

// The S3 object store (python's SimpleStorageService).
class SimpleStorageService {
 public:
  // bucket: the bucket name. timeout: seconds per request. prefix: put before every
  // object name. path_style: http://HOST/BUCKET/KEY rather than http://BUCKET.HOST/KEY
  // (always used with an endpoint override). Throws InvalidArgument naming a bad field.
  SimpleStorageService(std::string bucket, double timeout = 60.0, std::string prefix = "",
                       AwsOptions aws = {}, bool path_style = true);
  ~SimpleStorageService();
  SimpleStorageService(SimpleStorageService&&) noexcept;

  const std::string& bucket() const;
  const std::string& prefix() const;
  double timeout() const;  // seconds per request

  // The object operations CloudStorage is made of. Keys are whole object names (the
  // prefix is not added). Each throws CloudStorageError when S3 fails.
  struct Object {
    std::string body;
    std::string etag;
  };
  // The object at `key`, or only its first `max_bytes` (when not 0); nullopt if none.
  std::optional<Object> get(const std::string& key, size_t max_bytes = 0);
  // PUT with a precondition: If-None-Match: * when `etag` is empty, If-Match: etag
  // otherwise. False if the precondition failed.
  bool put(const std::string& key, const std::string& body, const std::string& etag);
  // DELETE, with If-Match: etag unless `etag` is empty. False if the precondition
  // failed; a missing object is not an error.
  bool remove(const std::string& key, const std::string& etag = "");
  struct Page {
    std::vector<std::string> keys;
    std::vector<Timestamp> modified;  // each key's LastModified, in the same order
    std::string next;                 // continuation token; empty on the last page
  };
  // One page (ListObjectsV2) of the keys that start with the prefix and `under`, in
  // order: from `token` ("" first), or else from the first key after `start_after` (a
  // whole key name; "": the first).
  Page list(const std::string& token, const std::string& under = "",
            const std::string& start_after = "");
  // Requests made so far, by kind ("s3 GET", ...).
  std::map<std::string, uint64_t> request_counts() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The SQS notification queue (python's SimpleQueueService).
class SimpleQueueService {
 public:
  // queue: a queue URL, or a name looked up with GetQueueUrl on first use. timeout:
  // seconds per request. poll_pause: seconds to sleep after an empty or failed receive
  // (receives long-poll, so it is rarely reached).
  SimpleQueueService(std::string queue, double timeout = 60.0, double poll_pause = 1.0,
                     AwsOptions aws = {});
  ~SimpleQueueService();
  SimpleQueueService(SimpleQueueService&&) noexcept;

  // Announces a stored message (SendMessage of {"id": ID, "timestamp": SECONDS}), seen
  // by receivers after `delay_seconds` (0 to 900).
  void queue_message(std::string_view id, Timestamp timestamp, int delay_seconds = 0);
  // The due index's side (CloudStorage::due): up to `max` (1 to 10) notices now, each
  // then hidden from other receivers for `visibility_seconds` (ReceiveMessage, no long
  // poll). Malformed ones are deleted (logged).
  struct Notice {
    QueueEntry entry;
    std::string message_id;  // SQS's, the same at every receipt of one notice
    std::string handle;      // this receipt's, for the two calls below
  };
  std::vector<Notice> receive(int max, int visibility_seconds);
  // Hides a received notice for `seconds` from now (0: visible again at once; at most
  // 12 h after it was received). False if the receipt is no longer valid.
  bool change_visibility(const std::string& handle, int seconds);
  void delete_message(const std::string& handle);
  // Long-polls up to `wait_seconds` (0 to 20) for announcements, deletes every message
  // received (a malformed one too, logged: left in the queue it would come back again
  // and again) and returns the announced messages.
  std::vector<QueueEntry> poll(int wait_seconds);
  double poll_pause() const;
  // Requests made so far, by kind ("sqs SendMessage", ...).
  std::map<std::string, uint64_t> request_counts() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class CloudStorage : public QueueStorage {
 public:
  // `clock`: where leases read the time (claim, renew, expiry), and the due index.
  // `stale_after`: seconds after which the repair sweep (repair_due) reads an object not
  // rewritten since and due, to announce it again (a message being attempted is rewritten
  // at each attempt, so a healthy one is never read).
  // `resolve_timeout`: how long a write whose PUT went unanswered is settled before
  // write() answers (RedisOptions::resolve_timeout says how; here a tombstone object is
  // PUT If-None-Match: * at its key). None: the request timeout of `object_store`.
  explicit CloudStorage(SimpleStorageService object_store,
                        std::optional<SimpleQueueService> message_queue = std::nullopt,
                        const Clock& clock = system_clock(), double stale_after = 7200,
                        std::optional<double> resolve_timeout = std::nullopt);
  // The same over several SQS queues, so that one storage holds more notices in flight
  // than one queue allows (120,000): a message's notices go to the queue its id picks,
  // and due() and wait() read every queue in turn (doc/costs.md). Every process on the
  // storage must name the same queues; their order does not matter for reading, but it
  // picks where new notices go, so keep it the same too.
  CloudStorage(SimpleStorageService object_store, std::vector<SimpleQueueService> message_queues,
               const Clock& clock = system_clock(), double stale_after = 7200,
               std::optional<double> resolve_timeout = std::nullopt);
  ~CloudStorage() override;

  Capabilities capabilities() const override;
  std::string kind() const override { return "s3"; }
  // One PUT (If-None-Match: *) and, with a message queue, one SendMessage. If the
  // announcement fails the message is still stored (load() finds it); that is logged.
  std::string write(const Envelope& envelope, Timestamp timestamp) override;
  // ListObjectsV2 page by page; the first 4 KiB of each object of a page (the record's
  // metadata) are fetched concurrently.
  std::unique_ptr<EntryStream> load() override;
  // One ListObjectsV2 page: each object not rewritten for `stale_after` is read (its
  // first 4 KiB) and, when due and not held, announced again.
  // One step of the sweep: a page of messages, and their stats() marks, put right.
  size_t repair_due(std::string& cursor) override;
  // With a message queue: from the marks beside the messages (one LIST per 1,000
  // messages, no read of any); without one, nullopt.
  std::optional<QueueStats> stats() override;
  void add_counters(const Counters& delta) override;
  Counters counters() override;

  // Requests made so far, by kind ("s3 GET", "sqs SendMessage", ...), for cost reports.
  std::map<std::string, uint64_t> request_counts() const;

 protected:
  QueuedMessage do_get(std::string_view id) override;
  void do_hold(std::string_view id, std::string_view reason, Timestamp since) override;
  void do_release_hold(std::string_view id) override;
  void do_announce(std::string_view id, Timestamp timestamp) override;
  void do_set_timestamp(std::string_view id, Timestamp timestamp, Fence fence,
                        std::string_view last_reply,
                        std::span<const RecipientReply> deferred) override;
  uint32_t do_increment_attempts(std::string_view id, Fence fence) override;
  void do_set_recipients_delivered(std::string_view id, std::span<const size_t> rcpt_indexes,
                                   Fence fence, std::span<const RecipientFailure> failed) override;
  void do_remove(std::string_view id, Fence fence) override;
  ClaimResult do_claim(std::string_view id, std::chrono::milliseconds duration) override;
  void do_release(std::string_view id, Fence fence) override;
  Lease do_renew(std::string_view id, Fence fence, std::chrono::milliseconds duration) override;
  // Long-polls SQS; deletes the notices it returns. Without a message queue: NotSupported.
  // Not to be mixed with due() on one queue: the notices are the due index.
  std::vector<QueueEntry> do_wait(std::chrono::milliseconds timeout) override;
  // With a message queue, its notices are the due index: see the top of cloud_storage.cc.
  std::vector<QueueEntry> do_due(Timestamp now, size_t limit,
                                 std::chrono::milliseconds hand_out) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace slimta
