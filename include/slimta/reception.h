// Reception: the one door into the queue (Postfix's cleanup). Every way a message
// arrives (SMTP DATA, HTTP injection, the CLI's enqueue) builds an Envelope with what
// it knows of the client and hands it to receive(), which applies the same rules in
// the same order, so the ways in cannot disagree:
//
//   1. the addresses: sender and every recipient well-formed   refused 501 5.1.7/5.1.3
//      and at most max_recipients of them                      refused 550 5.5.3
//   2. the size, against max_message_size                      refused 552 5.3.4
//   3. the hop count: max_hops Received: fields already        refused 554 5.4.6
//   4. the timestamp, from the injected Clock, and our Received: line on top
//   5. the stages, in order (signing, content checks): each may add headers, refuse
//      (5xx) or defer (4xx)
//   6. stored: durable once receive() returns queued           250 2.0.0
//      a storage fault                                        deferred 451 4.3.0
//      the storage full (StorageFull: e.g. a disk spool's      deferred 452 4.3.1
//      min-free guard)
//
// The result carries an SMTP reply for every outcome, which the SMTP server sends as
// it is and the other surfaces map (HTTP to a status, the CLI to an exit code). A
// reply never names our hosts, ports or paths; what went wrong in detail is logged.
//
// Thread safety: receive() and has_room() may be called from several threads at once;
// reload() from any thread (calls under way keep the options they began with).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "slimta/clock.h"
#include "slimta/envelope.h"
#include "slimta/queue.h"
#include "slimta/storage.h"

namespace slimta {

// What a stage decided about one message.
struct StageVerdict {
  enum class Kind { accept, refuse, defer };
  Kind kind = Kind::accept;
  // For refuse, a 5xx reply; for defer, a 4xx reply (e.g. "451 4.7.1 Try again
  // later"): what the client is told. A reply of the wrong class is corrected to the
  // kind's generic one.
  std::string reply;

  static StageVerdict accept() { return {}; }
  static StageVerdict refuse(std::string reply) { return {Kind::refuse, std::move(reply)}; }
  static StageVerdict defer(std::string reply) { return {Kind::defer, std::move(reply)}; }
};

// One step of the door, between the checks and the storage (doc/reception.md).
class ReceptionStage {
 public:
  virtual ~ReceptionStage() = default;
  // For the log: "dkim", "milter:rspamd", ...
  virtual std::string name() const = 0;
  // Looks at `envelope` as it will be stored (our Received: line already on top) and
  // may add headers to it (Envelope::headers.prepend/add); anything else it changes is
  // its own responsibility. Called from several threads at once. Throwing defers the
  // message (451 4.3.0), with the error logged.
  virtual StageVerdict inspect(Envelope& envelope) = 0;
};

struct ReceptionOptions {
  // Our name in the Received: line (and Envelope::receiver). Empty: host_name().
  std::string hostname;
  // Octets; a larger message is refused (552 5.3.4). 0: no limit.
  size_t max_message_size = 50 * 1024 * 1024;
  // Recipients of one message; more are refused (550 5.5.3; SMTP's RCPT says 452 4.5.3
  // to the one past it, so a client sends the rest in another transaction). 0: no
  // limit.
  size_t max_recipients = 1000;
  // A message arriving with this many Received: fields already is in a mail loop
  // (Postfix's hopcount_limit): refused, 554 5.4.6. 0: no limit.
  size_t max_hops = 50;
  // Bytes of messages held in memory at once over every way in (received, or being
  // stored): SMTP's DATA says 452 4.3.1 past it, HTTP injection 503. The surfaces
  // count against bytes_in_flight().
  size_t max_bytes_in_flight = size_t{1} << 30;
  // Run in order on every message that passed the checks.
  std::vector<std::shared_ptr<ReceptionStage>> stages;
};

struct ReceptionResult {
  enum class Outcome {
    queued,    // stored: the sender may forget it
    refused,   // permanently: a 5xx, nothing stored
    deferred,  // temporarily: a 4xx, nothing stored, the same message may come again
  };
  Outcome outcome = Outcome::deferred;
  std::string id;     // when queued
  std::string reply;  // the SMTP reply, e.g. "250 2.0.0 Ok: queued as ID"

  bool queued() const { return outcome == Outcome::queued; }
};

class Reception {
 public:
  // Where receive() puts a message once it passed: returns its id or why not (see
  // EnqueueResult). Called from several threads at once.
  using Store = std::function<EnqueueResult(Envelope&& envelope)>;

  // Into `queue`: stored, scheduled for now, counted by the queue. `queue` must
  // outlive every use of the Store.
  static Store into(Queue& queue);
  // Straight into `storage`, with no engine running (the CLI's enqueue): stored due
  // now, logged, and counted in the storage's shared counters ("enqueued", as a Queue
  // counts it) when it keeps them.
  static Store into(QueueStorage& storage, const Clock& clock = system_clock());

  // Whether a message of so many octets would find room (null: always).
  using Room = std::function<bool(size_t bytes)>;
  // The room `storage` says it has (QueueStorage::has_room); it must outlive the Room.
  static Room room_in(const QueueStorage& storage);

  // `clock` must outlive the Reception. Throws InvalidArgument for a null store or
  // stage.
  Reception(Store store, Room room, ReceptionOptions options = {},
            const Clock& clock = system_clock());
  ~Reception();
  Reception(const Reception&) = delete;
  Reception& operator=(const Reception&) = delete;

  // The checks, the Received: line, the stages and the store, in that order (the top
  // of this file). The envelope comes as the surface received it: sender, recipients,
  // client (ip, name, protocol, auth) and the parsed message; its timestamp and
  // receiver are set here.
  ReceptionResult receive(Envelope&& envelope) const;

  // Whether a message of `bytes` may come in now as far as room goes (the Room): asked
  // before taking the data (SMTP's DATA), so that a full storage says 452 early,
  // before the client sends megabytes the write would refuse.
  bool has_room(size_t bytes = 0) const;

  // The bytes of messages the surfaces hold in memory now (SMTP's DATA buffers, HTTP
  // bodies), against options()->max_bytes_in_flight: the budget they share.
  std::atomic<size_t>& bytes_in_flight() const { return bytes_in_flight_; }

  // The options in force: new calls take the latest reload().
  std::shared_ptr<const ReceptionOptions> options() const;
  // Takes new options for calls from now on. Throws InvalidArgument (changing
  // nothing) for a null stage.
  void reload(ReceptionOptions options);

 private:
  Store store_;
  Room room_;
  const Clock& clock_;
  std::atomic<std::shared_ptr<const ReceptionOptions>> options_;
  mutable std::atomic<size_t> bytes_in_flight_{0};
};

// The Received: field (RFC 5321 4.4) our door adds: "from NAME ([IP])" as far as the
// client is known, "by HOSTNAME with PROTOCOL", "for <RCPT>" with one recipient, then
// the date. Throws InvalidArgument if a part has a control character.
std::string received_field(const Envelope& envelope, const std::string& hostname);

}  // namespace slimta
