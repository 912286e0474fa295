#include "commands.h"

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

#include "format.h"

namespace slimta::cli {
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

std::string hostname() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0) return "localhost";
  return buf;
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

// get() for listing: a message removed meanwhile is skipped, one that cannot be read
// is reported.
std::optional<QueuedMessage> try_get(QueueStorage& storage, const std::string& id,
                                     std::ostream& err) {
  try {
    return storage.get(id);
  } catch (const KeyError&) {
    return std::nullopt;  // delivered or removed since load()
  } catch (const QueueError& e) {
    err << "slimta-queue: warning: cannot read message " << id << ": " << e.what() << "\n";
    return std::nullopt;
  }
}

std::vector<std::string> selected_ids(QueueStorage& storage, const Selection& sel) {
  if (!sel.all) return sel.ids;
  std::vector<std::string> ids;
  auto stream = storage.load();
  while (auto e = stream->next()) ids.push_back(std::move(e->id));
  return ids;
}

}  // namespace

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
  // Addresses go into SMTP commands later: refuse whitespace and control characters
  // (a CR LF in an address would inject commands), and recipients without a domain.
  auto bad_address = [](const std::string& a) {
    return a.size() > 254 || std::any_of(a.begin(), a.end(), [](char c) {
             auto u = static_cast<unsigned char>(c);
             return u <= 0x20 || u == 0x7F;
           });
  };
  if (bad_address(env.sender)) {
    err << "slimta-queue: error: invalid sender address '" << env.sender << "'\n";
    return 1;
  }
  for (const auto& r : env.recipients) {
    if (bad_address(r) || r.find('@') == std::string::npos) {
      err << "slimta-queue: error: invalid recipient address '" << r << "'\n";
      return 1;
    }
  }
  env.timestamp = now();
  env.receiver = hostname();
  env.client.protocol = "local";
  env.client.name = "slimta-queue";
  std::string id = storage.write(env, env.timestamp);
  out << id << "\n";
  return 0;
}

int cmd_list(QueueStorage& storage, bool json, std::ostream& out, std::ostream& err) {
  auto entries = sorted_entries(storage, err);
  size_t count = 0, bytes = 0;
  if (json) out << "[";
  if (!json && !entries.empty()) {
    out << "-Queue ID-                         --Size-- --Next Attempt (UTC)-- Tries  "
           "Sender/Recipient\n";
  }
  for (const auto& entry : entries) {
    auto msg = try_get(storage, entry.id, err);
    if (!msg) continue;
    size_t size = msg->envelope.message_size();
    if (json) {
      out << (count ? ",\n " : "\n ") << dump(message_json(entry.id, *msg));
    } else {
      char line[160];
      std::snprintf(line, sizeof(line), "%-34s %8zu  %-20s %5u  ", entry.id.c_str(), size,
                    format_time(msg->timestamp).c_str(), msg->attempts);
      out << line << display_sender(msg->envelope.sender) << "\n";
      for (const auto& r : msg->envelope.recipients) out << std::string(74, ' ') << r << "\n";
      if (!msg->delivered.empty()) {
        out << std::string(74, ' ') << "(" << msg->delivered.size() << " already delivered)\n";
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
    nlohmann::json j = message_json(id, msg);
    j["original_recipients"] = msg.original_recipients;
    j["client"] = {{"ip", env.client.ip},
                   {"host", env.client.host},
                   {"name", env.client.name},
                   {"protocol", env.client.protocol},
                   {"auth", env.client.auth}};
    j["receiver"] = env.receiver;
    j["received"] = env.timestamp;
    nlohmann::json headers = nlohmann::json::array();
    for (const auto& f : env.headers.fields()) {
      headers.push_back({{"name", f.name}, {"value", f.value()}});
    }
    j["headers"] = headers;
    out << dump(j, 2) << "\n";
    return 0;
  }
  out << "id:           " << id << "\n"
      << "next attempt: " << format_time(msg.timestamp) << " UTC\n"
      << "attempts:     " << msg.attempts << "\n"
      << "size:         " << env.message_size() << " bytes\n"
      << "sender:       " << display_sender(env.sender) << "\n";
  out << "recipients:   " << env.recipients.size() << " pending, " << msg.delivered.size()
      << " delivered of " << msg.original_recipients << "\n";
  for (const auto& r : env.recipients) out << "              " << r << "\n";
  out << "received:     " << format_time(env.timestamp) << " UTC";
  if (!env.client.ip.empty() || !env.client.host.empty()) {
    out << " from " << (env.client.host.empty() ? "unknown" : env.client.host) << " ["
        << env.client.ip << "]";
  }
  if (!env.client.name.empty()) out << " (helo " << env.client.name << ")";
  if (!env.client.protocol.empty()) out << " with " << env.client.protocol;
  if (!env.client.auth.empty()) out << " auth " << env.client.auth;
  if (!env.receiver.empty()) out << " by " << env.receiver;
  out << "\nheaders:\n";
  for (const auto& f : env.headers.fields()) {
    out << "  " << f.name << ":" << f.raw;
    if (!f.raw.ends_with('\n')) out << "\n";
  }
  return 0;
}

int cmd_retry(QueueStorage& storage, const Selection& sel, bool json, std::ostream& out,
              std::ostream& err) {
  int rc = 0;
  nlohmann::json done = nlohmann::json::array();
  Timestamp t = now();
  for (const auto& id : selected_ids(storage, sel)) {
    try {
      storage.set_timestamp(id, t);
      done.push_back(id);
      if (!json) out << "retry " << id << " at " << format_time(t) << " UTC\n";
    } catch (const KeyError& e) {
      if (sel.all) continue;  // removed since it was listed
      err << "slimta-queue: error: " << e.what() << "\n";
      rc = 1;
    }
  }
  if (json) out << dump(nlohmann::json{{"retried", done}}) << "\n";
  return rc;
}

int cmd_remove(QueueStorage& storage, const Selection& sel, bool json, std::ostream& out,
               std::ostream&) {
  nlohmann::json done = nlohmann::json::array();
  for (const auto& id : selected_ids(storage, sel)) {
    storage.remove(id);
    done.push_back(id);
    if (!json) out << "removed " << id << "\n";
  }
  if (json) out << dump(nlohmann::json{{"removed", done}}) << "\n";
  return 0;
}

int cmd_info(QueueStorage& storage, bool json, std::ostream& out, std::ostream& err) {
  size_t count = 0, bytes = 0;
  std::optional<Timestamp> next;
  auto stream = storage.load();
  while (auto e = stream->next()) {
    auto msg = try_get(storage, e->id, err);
    if (!msg) continue;
    ++count;
    bytes += msg->envelope.message_size();
    if (!next || e->timestamp < *next) next = e->timestamp;
  }
  Capabilities caps = storage.capabilities();
  if (json) {
    nlohmann::json j{{"messages", count},
                     {"bytes", bytes},
                     {"corrupt", stream->corrupt()},
                     {"next_attempt", next ? nlohmann::json(*next) : nlohmann::json(nullptr)},
                     {"durable", caps.durable},
                     {"shared", caps.shared},
                     {"can_wait", caps.can_wait}};
    out << dump(j) << "\n";
    return 0;
  }
  out << "messages:     " << count << "\n"
      << "bytes:        " << bytes << "\n";
  if (next) out << "next attempt: " << format_time(*next) << " UTC\n";
  if (stream->corrupt() > 0) out << "corrupt:      " << stream->corrupt() << " set aside\n";
  return 0;
}

}  // namespace slimta::cli
