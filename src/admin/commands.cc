#include "commands.h"

#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <numeric>
#include <set>
#include <sstream>

#include "format.h"
#include "operations.h"
#include "slimta/ascii.h"
#include "slimta/queue.h"
#include "slimta/reception.h"
#include "slimta/user_database.h"

namespace slimta::admin {
namespace {

std::string read_input(const std::string& file) {
  if (file == "-") {
    return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) throw InvalidArgument("cannot read message file '" + file + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw InvalidArgument("error reading message file '" + file + "'");
  return ss.str();
}

// Every (timestamp, id), oldest first.
std::vector<QueueEntry> sorted_entries(QueueStorage& storage, std::ostream& err) {
  auto stream = storage.load();
  std::vector<QueueEntry> entries;
  while (auto e = stream->next()) entries.push_back(std::move(*e));
  if (stream->corrupt() > 0) {
    err << "slimta-queue: warning: " << stream->corrupt()
        << " corrupt message(s) were set aside while listing (see the log)\n";
  }
  std::sort(entries.begin(), entries.end(), [](const QueueEntry& a, const QueueEntry& b) {
    return a.timestamp != b.timestamp ? a.timestamp < b.timestamp : a.id < b.id;
  });
  return entries;
}

}  // namespace

void Selection::check() const {
  const bool filtered = all || !filter.empty();
  if (ids.empty() == !filtered)
    throw InvalidArgument(
        "give message ids, or --all and/or --domain, --sender, --older-than, --state, "
        "--destination (not both)");
  if (std::count(ids.begin(), ids.end(), "-") && ids.size() > 1)
    throw InvalidArgument("'-' (ids from standard input) stands alone");
  filter.check();
}

std::vector<std::string> Selection::resolve(QueueStorage& storage, std::istream& in) const {
  check();
  if (ids.size() == 1 && ids.front() == "-") {
    std::vector<std::string> out;
    for (std::string line; std::getline(in, line);) {
      // postqueue -p's marks and blanks tolerated: "ID*", "ID!", "  ID  ".
      line.erase(0, line.find_first_not_of(" \t"));
      line.erase(line.find_last_not_of(" \t\r*!") + 1);
      if (!line.empty()) out.push_back(std::move(line));
    }
    return out;
  }
  if (!ids.empty()) return ids;
  return sorted_ids_matching(storage, filter);
}

int cmd_enqueue(QueueStorage& storage, const EnqueueOptions& opts, std::ostream& out,
                std::ostream& err) {
  Envelope env;
  env.parse(read_input(opts.file));
  if (opts.from) {
    env.sender = *opts.from;
  } else {
    for (const char* name : {"Return-Path", "Sender", "From"}) {
      if (auto v = env.headers.get(name)) {
        auto addrs = parse_address_list(*v);
        if (!addrs.empty()) {
          env.sender = addrs.front();
          break;
        }
        if (std::string(name) == "Return-Path" && v->find("<>") != std::string::npos) break;
      }
    }
    if (env.sender.empty() && !env.headers.get("Return-Path")) {
      err << "slimta-queue: error: no sender: give --from ADDRESS (--from '' for the null "
             "sender) or a From: header\n";
      return 1;
    }
  }
  if (!opts.to.empty()) {
    env.recipients = opts.to;
  } else {
    for (const char* name : {"To", "Cc", "Bcc"}) {
      for (const auto& v : env.headers.get_all(name)) {
        auto addrs = parse_address_list(v);
        env.recipients.insert(env.recipients.end(), addrs.begin(), addrs.end());
      }
    }
    env.headers.remove("Bcc");  // like sendmail -t: Bcc recipients stay hidden
  }
  if (env.recipients.empty()) {
    err << "slimta-queue: error: no recipients: give --to ADDRESS or To:/Cc:/Bcc: headers\n";
    return 1;
  }
  env.client.protocol = "local";
  return enqueue_envelope(storage, std::move(env), out, err);
}

int enqueue_envelope(QueueStorage& storage, Envelope env, std::ostream& out, std::ostream& err) {
  // The door SMTP and HTTP share: the same checks, Received: line and counters.
  Reception reception(Reception::into(storage), Reception::room_in(storage));
  ReceptionResult result = reception.receive(std::move(env));
  if (!result.queued()) {
    err << "slimta-queue: error: message not queued: " << result.reply << "\n";
    // sendmail's exit codes: EX_TEMPFAIL (75) when the same message may be tried again.
    return result.outcome == ReceptionResult::Outcome::deferred ? 75 : 1;
  }
  out << result.id << "\n";
  return 0;
}

namespace {

// Why a destination holds its mail back now: "suspended until ...: REASON", "down until
// ...: REPLY", or "" when it does not.
std::string held_back(const DestinationStatus& s, Timestamp t) {
  const std::string state = destination_state(s, t);  // the rule, as everywhere
  if (state == "suspended") {
    std::string why = "suspended " + (s.suspended_until == DestinationStatus::kForever
                                          ? std::string("until resumed")
                                          : "until " + format_time(s.suspended_until) + " UTC");
    return s.suspend_reason.empty() ? why : why + ": " + s.suspend_reason;
  }
  if (state == "down") {
    std::string why = "down until " + format_time(s.down_until) + " UTC";
    return s.last_reply.empty() ? why : why + ": " + s.last_reply;
  }
  return "";
}

// The destinations that hold mail back now, by name, with why.
std::map<std::string, std::string> holding_back(QueueStorage& storage, Timestamp t) {
  std::map<std::string, std::string> out;
  auto board = storage.destinations();
  if (!board) return out;
  for (const auto& s : board->status()) {
    if (std::string why = held_back(s, t); !why.empty()) out[s.name] = why;
  }
  return out;
}

// "2 delivered, 1 bounced": what became of the recipients done with (`states`:
// recipient_states() of the message).
std::string done_summary(const std::vector<RecipientState>& states) {
  size_t delivered = 0, bounced = 0, failed = 0;
  for (const auto& r : states) {
    delivered += r.state == "delivered";
    bounced += r.state == "bounced";
    failed += r.state == "failed";
  }
  std::string out;
  for (auto [n, what] : {std::pair{delivered, "delivered"}, std::pair{bounced, "bounced"},
                         std::pair{failed, "failed, not bounced"}}) {
    if (n == 0) continue;
    if (!out.empty()) out += ", ";
    out += std::to_string(n) + " " + what;
  }
  return out;
}

// The distinct destinations of `env`'s pending recipients, in order.
std::vector<std::string> destinations_of(const Envelope& env, const DestinationOf& destination_of) {
  std::vector<std::string> out;
  for (const auto& r : env.recipients) {
    std::string d = destination_of(r);
    if (std::find(out.begin(), out.end(), d) == out.end()) out.push_back(std::move(d));
  }
  return out;
}

}  // namespace

int cmd_list(QueueStorage& storage, const DestinationOf& destination_of, bool json,
             std::ostream& out, std::ostream& err) {
  auto entries = sorted_entries(storage, err);
  const std::map<std::string, std::string> held_back_now =
      destination_of ? holding_back(storage, now()) : std::map<std::string, std::string>{};
  size_t count = 0, bytes = 0;
  if (json) out << "[";
  if (!json && !entries.empty()) {
    out << "-Queue ID-                         --Size-- --Next Attempt (UTC)-- Tries  "
           "Sender/Recipient\n";
  }
  Timestamp t = now();
  for (const auto& entry : entries) {
    auto msg = try_get(storage, entry.id, err);
    if (!msg) continue;
    size_t size = msg->envelope.message_size();
    // Issue 34: a message waiting for a suspended or down destination said nothing of it.
    std::vector<std::pair<std::string, std::string>> waits;
    if (!held_back_now.empty()) {
      for (const auto& d : destinations_of(msg->envelope, destination_of)) {
        if (auto it = held_back_now.find(d); it != held_back_now.end()) waits.emplace_back(*it);
      }
    }
    if (json) {
      nlohmann::json j = message_json(entry.id, *msg);
      if (!waits.empty()) {
        j["waits_for"] = nlohmann::json::array();
        for (const auto& [d, why] : waits)
          j["waits_for"].push_back({{"destination", d}, {"why", why}});
      }
      out << (count ? ",\n " : "\n ") << dump(j);
    } else {
      // Like postqueue -p: '!' after the id marks a held message, '*' one being attempted.
      std::string state = message_state(*msg, t);
      std::string mark = state == "held" ? "!" : state == "active" ? "*" : "";
      char line[160];
      std::snprintf(line, sizeof(line), "%-34s %8zu  %-20s %5u  ", (entry.id + mark).c_str(), size,
                    msg->hold ? "(held)" : format_time(msg->timestamp).c_str(), msg->attempts);
      out << line << display_sender(msg->envelope.sender) << "\n";
      // Like postqueue -p: why the last attempt was deferred, in parentheses.
      if (!msg->last_reply.empty())
        out << std::string(74, ' ') << "(" << printable(msg->last_reply) << ")\n";
      if (msg->hold) {
        out << std::string(74, ' ') << "(held since " << format_time(msg->hold->since)
            << " UTC: " << msg->hold->reason << ")\n";
      }
      for (const auto& [d, why] : waits)
        out << std::string(74, ' ') << "(waits for " << printable(d) << ", " << printable(why)
            << ")\n";
      for (const auto& r : msg->envelope.recipients)
        out << std::string(74, ' ') << printable(r) << "\n";
      if (!msg->delivered.empty()) {
        out << std::string(74, ' ') << "(" << done_summary(recipient_states(*msg)) << ")\n";
      }
      out << "\n";
    }
    ++count;
    bytes += size;
  }
  if (json) {
    out << (count ? "\n]\n" : "]\n");
  } else if (count == 0) {
    out << "Mail queue is empty\n";
  } else {
    out << "-- " << (bytes + 1023) / 1024 << " Kbytes in " << count
        << (count == 1 ? " Request.\n" : " Requests.\n");
  }
  return 0;
}

int cmd_show(QueueStorage& storage, const std::string& id, bool raw, bool json, std::ostream& out) {
  QueuedMessage msg = storage.get(id);
  const Envelope& env = msg.envelope;
  if (raw) {
    out << env.flatten();
    return 0;
  }
  if (json) {
    out << dump(show_json(id, msg), 2) << "\n";
    return 0;
  }
  out << "id:           " << id << "\n"
      << "state:        " << message_state(msg, now()) << "\n";
  if (msg.hold) {
    out << "held:         since " << format_time(msg.hold->since)
        << " UTC: " << printable(msg.hold->reason) << "\n";
  }
  if (msg.lease.expires > now()) {
    out << "lease:        " << msg.lease.token << ", until " << format_time(msg.lease.expires)
        << " UTC\n";
  }
  if (!msg.hold) out << "next attempt: " << format_time(msg.timestamp) << " UTC\n";
  out << "attempts:     " << msg.attempts << "\n";
  if (!msg.last_reply.empty()) out << "last reply:   " << printable(msg.last_reply) << "\n";
  out << "size:         " << env.message_size() << " bytes\n"
      << "sender:       " << display_sender(env.sender) << "\n";
  const std::vector<RecipientState> states = recipient_states(msg);
  out << "recipients:   " << env.recipients.size() << " pending";
  if (!msg.delivered.empty()) out << ", " << done_summary(states);
  out << " of " << msg.original_recipients << "\n";
  for (const auto& r : states) {
    out << "              " << printable(r.address) << " (" << r.state;
    if (!r.reply.empty()) out << ": " << printable(r.reply);
    out << ")\n";
  }
  out << "received:     " << format_time(env.timestamp) << " UTC";
  if (!env.client.ip.empty() || !env.client.host.empty()) {
    out << " from " << (env.client.host.empty() ? "unknown" : printable(env.client.host)) << " ["
        << printable(env.client.ip) << "]";
  }
  if (!env.client.name.empty()) out << " (helo " << printable(env.client.name) << ")";
  if (!env.client.protocol.empty()) out << " with " << printable(env.client.protocol);
  if (!env.client.auth.empty()) out << " auth " << printable(env.client.auth);
  if (!env.receiver.empty()) out << " by " << printable(env.receiver);
  out << "\nheaders:\n";
  for (const auto& f : env.headers.fields()) {
    // Each line of the field indented, continuation lines too, with its line ending as \n.
    std::string_view rest = f.raw;
    out << "  " << printable(f.name) << ":";
    while (!rest.empty()) {
      size_t eol = rest.find('\n');
      std::string_view line = rest.substr(0, eol);
      if (line.ends_with('\r')) line.remove_suffix(1);
      out << printable(line, /*line_breaks=*/true) << "\n";
      if (eol == std::string_view::npos || eol + 1 == rest.size()) break;
      rest.remove_prefix(eol + 1);
      out << "  ";
    }
  }
  return 0;
}

// Runs `fn` on each selected id; an unknown id named (on the command line or stdin) is
// an error (exit 1), one that went away during --all or a filter's run is skipped, and
// a filter that takes no message says so (exit 1). `fn` returns what it did to the
// message ("held", "already held", ...): printed "WHAT ID" per message, or with --json
// one {"WHAT": [ids], ...} object (`verb`, what is done normally, always present).
template <typename Fn>
int for_each_selected(QueueStorage& storage, const Selection& sel, const char* verb, bool json,
                      std::ostream& out, std::ostream& err, Fn&& fn) {
  int rc = 0;
  nlohmann::json done = nlohmann::json::object();
  done[verb] = nlohmann::json::array();
  const bool named = !sel.all && sel.filter.empty();
  for (const auto& id : sel.resolve(storage, std::cin)) {
    try {
      std::string what = fn(id);
      done[what].push_back(id);
      if (!json) out << what << " " << id << "\n";
    } catch (const KeyError& e) {
      if (!named) continue;
      err << "slimta-queue: error: " << e.what() << "\n";
      rc = 1;
    }
  }
  if (!named && done.size() == 1 && done[verb].empty() && !sel.filter.empty()) {
    err << "slimta-queue: no message matches\n";  // nothing done: said, and exit 1
    rc = 1;
  }
  if (json) out << dump(done) << "\n";
  return rc;
}

int cmd_hold(QueueStorage& storage, const Selection& sel, const std::optional<std::string>& reason,
             bool json, std::ostream& out, std::ostream& err) {
  return for_each_selected(storage, sel, "held", json, out, err, [&](const std::string& id) {
    return act_on(storage, "hold", id, reason);
  });
}

int cmd_bounce(QueueStorage& storage, const Selection& sel,
               const std::optional<std::string>& reason, bool json, std::ostream& out,
               std::ostream& err) {
  return for_each_selected(storage, sel, "bounced", json, out, err, [&](const std::string& id) {
    return act_on(storage, "bounce", id, reason);
  });
}

int cmd_release(QueueStorage& storage, const Selection& sel, bool json, std::ostream& out,
                std::ostream& err) {
  return for_each_selected(storage, sel, "released", json, out, err,
                           [&](const std::string& id) { return act_on(storage, "release", id); });
}

int cmd_shape(QueueStorage& storage, bool json, std::ostream& out, std::ostream& err) {
  Shape shape = compute_shape(storage, err);
  if (json) {
    out << dump(shape_json(shape)) << "\n";
    return 0;
  }
  auto print_row = [&](const std::string& name, const Shape::Row& r) {
    char cell[32];
    std::snprintf(cell, sizeof(cell), "%6zu", Shape::sum(r));
    out << std::string(std::max<size_t>(1, 24 - std::min<size_t>(name.size(), 23)), ' ') << name
        << " " << cell;
    for (int b = 0; b < Shape::kBuckets; ++b) {
      std::snprintf(cell, sizeof(cell), " %5zu", r[b]);
      out << cell;
    }
    out << "\n";
  };
  out << std::string(25, ' ') << "     T";
  for (const char* n : Shape::kBucketNames) {
    char cell[16];
    std::snprintf(cell, sizeof(cell), " %5s", n);
    out << cell;
  }
  out << "\n";
  print_row("TOTAL", shape.total);
  for (const auto& [d, r] : shape.domains) print_row(d, r);
  return 0;
}

int cmd_retry(QueueStorage& storage, const Selection& sel, const DestinationOf& destination_of,
              bool json, std::ostream& out, std::ostream& err) {
  Flush flush(storage, destination_of);
  return for_each_selected(storage, sel, "retried", json, out, err, [&](const std::string& id) {
    return act_on(storage, "retry", id, std::nullopt, &flush);
  });
}

int cmd_remove(QueueStorage& storage, const Selection& sel, bool json, std::ostream& out,
               std::ostream& err) {
  return for_each_selected(storage, sel, "removed", json, out, err,
                           [&](const std::string& id) { return act_on(storage, "remove", id); });
}

int cmd_info(QueueStorage& storage, bool json, std::ostream& out, std::ostream& err) {
  size_t count = 0, bytes = 0, held = 0;
  std::optional<Timestamp> next;
  auto stream = storage.load();
  while (auto e = stream->next()) {
    auto msg = try_get(storage, e->id, err);
    if (!msg) continue;
    ++count;
    bytes += msg->envelope.message_size();
    if (msg->hold) {
      ++held;  // due when released, not at its old time
    } else if (!next || msg->timestamp < *next) {
      next = msg->timestamp;
    }
  }
  Capabilities caps = storage.capabilities();
  Counters counters = caps.can_lease ? storage.counters() : Counters{};
  if (json) {
    nlohmann::json j = storage_info_json(storage);
    j.update(
        {{"messages", count}, {"held", held}, {"bytes", bytes}, {"corrupt", stream->corrupt()}});
    put_time(j, "next_attempt", next);
    out << dump(j) << "\n";
    return 0;
  }
  out << "messages:     " << count << "\n"
      << "held:         " << held << "\n"
      << "bytes:        " << bytes << "\n";
  if (next) out << "next attempt: " << format_time(*next) << " UTC\n";
  out << "durable:      "
      << (caps.durable ? "yes"
                       : "no: a crash can lose accepted mail (Redis needs appendonly yes and "
                         "appendfsync always)")
      << "\n";
  if (stream->corrupt() > 0) out << "corrupt:      " << stream->corrupt() << " set aside\n";
  if (!counters.empty()) {
    out << "events (all queue processes, since the storage was created):\n";
    for (const auto& [name, n] : counters) {
      char line[64];
      std::snprintf(line, sizeof(line), "  %-12s %lld\n", (name + ":").c_str(),
                    static_cast<long long>(n));
      out << line;
    }
  }
  return 0;
}

int cmd_suspend(QueueStorage& storage, const std::string& destination,
                std::optional<double> seconds, const std::string& reason,
                const DestinationOf& destination_of, bool json, std::ostream& out,
                std::ostream& err) {
  if (destination.empty()) throw InvalidArgument("suspend: no destination given");
  if (std::string why = not_a_destination(destination, destination_of); !why.empty())
    err << "slimta-queue: warning: " << why << " (suspended anyway)\n";
  Timestamp until = seconds ? now() + *seconds : DestinationStatus::kForever;
  storage.destinations()->suspend(to_lower(destination), until, reason);
  if (json) {
    nlohmann::json j{{"destination", to_lower(destination)}, {"suspended", true}};
    put_time(j, "until", seconds ? std::optional<Timestamp>(until) : std::nullopt);
    out << dump(j) << "\n";
  } else {
    out << "suspended " << to_lower(destination)
        << (seconds ? " until " + format_time(until) + " UTC" : std::string(" until resumed"))
        << "\n";
  }
  return 0;
}

int cmd_resume(QueueStorage& storage, const std::string& destination, bool json,
               std::ostream& out) {
  if (destination.empty()) throw InvalidArgument("resume: no destination given");
  storage.destinations()->resume(to_lower(destination));
  if (json) {
    out << dump(nlohmann::json{{"destination", to_lower(destination)}, {"suspended", false}})
        << "\n";
  } else {
    out << "resumed " << to_lower(destination) << "\n";
  }
  return 0;
}

int cmd_destinations(QueueStorage& storage, const ShapingPolicy& shaping,
                     const DestinationOf& destination_of, bool json, std::ostream& out,
                     std::ostream& err) {
  Timestamp t = now();
  std::map<std::string, DestinationStatus> all;
  for (auto& s : storage.destinations()->status()) all[s.name] = std::move(s);
  // Each message once under each destination its pending recipients wait for (issue
  // 34: counted by recipient domain, mail for a smarthost showed 0 under it).
  std::map<std::string, size_t> waiting;
  auto stream = storage.load();
  while (auto e = stream->next()) {
    auto msg = try_get(storage, e->id, err);
    if (!msg) continue;
    for (const auto& d : destinations_of(msg->envelope, destination_of)) {
      ++waiting[d];
      all.try_emplace(d).first->second.name = d;
    }
  }
  auto state_of = [&](const DestinationStatus& s) { return destination_state(s, t); };
  if (json) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& [name, s] : all) {
      list.push_back(
          destination_json(s, shaping.limits(name), waiting.contains(name) ? waiting[name] : 0, t));
    }
    out << dump(list) << "\n";
    return 0;
  }
  if (all.empty()) {
    out << "no destination has state or mail waiting\n";
    return 0;
  }
  char line[256];
  std::snprintf(line, sizeof line, "%-32s %-9s %6s %6s %8s %8s  %s\n", "DESTINATION", "STATE",
                "IN USE", "LIMIT", "WAITING", "FAILURES", "UNTIL / LAST REPLY");
  out << line;
  for (const auto& [name, s] : all) {
    const DestinationLimits& limits = shaping.limits(name);
    std::string note;
    if (s.suspended(t)) {
      note = s.suspended_until == DestinationStatus::kForever
                 ? "until resumed"
                 : "until " + format_time(s.suspended_until);
      if (!s.suspend_reason.empty()) note += ": " + s.suspend_reason;
    } else if (s.down_until > t) {
      note = "until " + format_time(s.down_until);
      if (!s.last_reply.empty()) note += ": " + s.last_reply;
    } else {
      note = s.last_reply;
    }
    std::snprintf(line, sizeof line, "%-32s %-9s %6zu %6zu %8zu %8u  ", printable(name).c_str(),
                  state_of(s).c_str(), s.in_use, limits.max_connections,
                  waiting.contains(name) ? waiting[name] : size_t{0}, s.failures);
    out << line << printable(note) << "\n";
  }
  return 0;
}

int cmd_passwd(const std::string& user, const std::string& users_file, std::optional<gid_t> group,
               std::ostream& err) {
  bool terminal = ::isatty(STDIN_FILENO) == 1;
  auto read_password = [&](const char* prompt) {
    termios saved{};
    if (terminal) {
      err << prompt << std::flush;
      ::tcgetattr(STDIN_FILENO, &saved);
      termios quiet = saved;
      quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
      ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    std::string line;
    bool got = static_cast<bool>(std::getline(std::cin, line));
    if (terminal) {
      ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
      err << "\n";
    }
    if (!got) throw InvalidArgument("no password given on standard input");
    if (!line.empty() && line.back() == '\r') line.pop_back();
    return line;
  };
  std::string password = read_password("Password: ");
  if (password.empty()) throw InvalidArgument("the password is empty");
  if (terminal && read_password("Again: ") != password)
    throw InvalidArgument("the passwords differ");
  UserDatabase::store(users_file, user, UserDatabase::hash(password), group);
  err << "slimta-queue passwd: " << user << " set in " << users_file << "\n";
  return 0;
}

}  // namespace slimta::admin
