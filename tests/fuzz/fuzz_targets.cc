#include "fuzz/fuzz_targets.h"

#include <hiredis.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>

#include "core/record.h"
#include "daemon/http_limits.h"
#include "redis/cluster.h"
#include "slimta/envelope.h"
#include "slimta/errors.h"
#include "smtp/command.h"
#include "smtp/proxy_header.h"
#include "smtp/reply.h"

namespace slimta::fuzz {
namespace {

// A failed property: abort, so that libFuzzer keeps the input and the test fails.
void require(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

void smtp_command(std::string_view data) {
  for (std::string_view keyword : {"FROM", "TO"}) {
    smtp::Command c = smtp::parse_command(data);
    require(c.verb.size() <= data.size());
    std::string error;
    auto path = smtp::parse_path_arg(data, keyword, error);
    if (path) {
      require(path->address.size() <= 254);
      for (char ch : path->address)
        require(static_cast<unsigned char>(ch) > 0x20 && ch != '<' && ch != '>');
    } else {
      require(!error.empty() && (error[0] == '5'));
    }
  }
}

void record(std::string_view data) {
  try {
    record::Decoded d = record::decode(data, "fuzz");
    // What decodes encodes back to the same metadata and envelope.
    std::string again = record::encode(d.meta, d.envelope ? &*d.envelope : nullptr);
    record::Decoded e = record::decode(again, "fuzz");
    require(e.meta == d.meta);
    require(e.envelope.has_value() == d.envelope.has_value());
    if (d.envelope) require(e.envelope->flatten() == d.envelope->flatten());
  } catch (const CorruptRecord&) {
  } catch (const InvalidArgument&) {
  }
  try {
    record::decode_prefix(data.substr(0, record::kPrefixSize), "fuzz");
  } catch (const CorruptRecord&) {
  }
}

void message(std::string_view data) {
  Envelope env;
  env.parse(std::string(data));
  require(env.flatten() == data);  // byte-exact, whatever the input
  require(env.message_size() == data.size());
  for (const auto& f : env.headers.fields()) require(!f.name.empty());
}

void address_list(std::string_view data) {
  // Each address is a piece of the input (an unterminated quote gets its closing one).
  for (const std::string& a : parse_address_list(data)) {
    require(a.size() <= data.size() + 1);
    require(a.find('@') != std::string::npos);
  }
}

void proxy_header(std::string_view data) {
  smtp::ProxyHeader h = smtp::parse_proxy_header(data);
  switch (h.status) {
    case smtp::ProxyHeader::Status::ok:
      require(h.length > 0 && h.length <= data.size());
      break;
    case smtp::ProxyHeader::Status::invalid:
      require(!h.error.empty());
      break;
    case smtp::ProxyHeader::Status::incomplete:
      require(data.size() < 16 + smtp::kMaxProxyV2Payload);
      break;
  }
}

void smtp_reply(std::string_view data) {
  // The lines as a peer's replies, one after another, within small bounds.
  smtp::ReplyLimits limits{8, 512, 64};
  smtp::ReplyReader reader(limits);
  size_t lines = 0;
  while (!data.empty()) {
    size_t nl = data.find('\n');
    std::string_view line = data.substr(0, nl);
    data = nl == std::string_view::npos ? std::string_view() : data.substr(nl + 1);
    bool complete = false;
    try {
      complete = reader.add(line);
      ++lines;
    } catch (const smtp::BadReply& e) {
      require(e.what()[0] != '\0');
      reader = smtp::ReplyReader(limits);  // the connection would be closed
      lines = 0;
      continue;
    }
    require(lines <= limits.max_lines);
    if (complete) {
      smtp::Reply r = reader.take();
      require(r.code >= 0 && r.code <= 999);
      require(r.lines.size() == lines && r.text.size() <= limits.max_text);
      lines = 0;
    }
  }
}

void http_head(std::string_view data) {
  // Lines: the Host header, then Content-Length, Transfer-Encoding and Content-Encoding
  // ("-" for absent), as a client may send them.
  std::optional<std::string_view> field[4];
  for (auto& f : field) {
    size_t nl = data.find('\n');
    std::string_view line = data.substr(0, nl);
    data = nl == std::string_view::npos ? std::string_view() : data.substr(nl + 1);
    if (line != "-") f = line;
  }
  for (const char* bound : {"127.0.0.1", "0.0.0.0", "::1", "192.0.2.1"}) {
    daemon::ListenerNames listener{bound, {"mx.example.net"}};
    bool allowed = field[0] && daemon::host_allowed(*field[0], listener);
    require(!allowed || !field[0]->empty());
  }
  for (size_t max_body : {size_t{0}, size_t{4096}}) {
    daemon::RequestHead head{"POST", "/", field[0], field[1], field[2], field[3]};
    daemon::HeadVerdict v = daemon::check_framing(head, max_body);
    require(v.status == 0 || v.status == 400 || v.status == 411 || v.status == 413 ||
            v.status == 415);
    require(v.status != 0 || v.body <= max_body);
    require(v.status == 0 || !v.message.empty());
    require(v.status == 0 || v.body == 0);
  }
}

void cluster_slots(std::string_view data) {
  // The bytes as a node sends them, read by hiredis as the storage reads them.
  std::unique_ptr<redisReader, void (*)(redisReader*)> reader(redisReaderCreate(), redisReaderFree);
  reader->maxbuf = 0;
  if (redisReaderFeed(reader.get(), data.data(), data.size()) != REDIS_OK) return;
  while (true) {
    void* raw = nullptr;
    if (redisReaderGetReply(reader.get(), &raw) != REDIS_OK || !raw) return;
    std::unique_ptr<redisReply, void (*)(void*)> reply(static_cast<redisReply*>(raw),
                                                       freeReplyObject);
    try {
      redis::SlotMap map = redis::parse_cluster_slots(reply.get(), "127.0.0.1", "fuzz");
      require(map.slots.size() == redis::kClusterSlots);
      for (const auto& name : map.slots)
        require(name.empty() ||
                std::find(map.masters.begin(), map.masters.end(), name) != map.masters.end());
    } catch (const QueueError& e) {
      require(e.retryable() && std::string(e.what()).find("CLUSTER SLOTS") != std::string::npos);
    }
  }
}

}  // namespace slimta::fuzz
