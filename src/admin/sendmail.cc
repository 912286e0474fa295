#include "admin/sendmail.h"

#include <algorithm>

#include "slimta/errors.h"

namespace slimta::admin {

SendmailArgs parse_sendmail_args(const std::vector<std::string>& args) {
  SendmailArgs out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.empty() || a[0] != '-' || a == "-") {
      out.recipients.push_back(a);
      continue;
    }
    if (a == "--") {
      out.recipients.insert(out.recipients.end(), args.begin() + static_cast<long>(i) + 1,
                            args.end());
      break;
    }
    // An option's value: the rest of the word, or the next one.
    auto value = [&](const char* what) {
      if (a.size() > 2) return a.substr(2);
      if (i + 1 >= args.size()) throw InvalidArgument(std::string(what) + " needs a value");
      return args[++i];
    };
    switch (a[1]) {
      case 't':
        out.extract = true;
        break;
      case 'i':
        out.ignore_dots = true;
        break;
      case 'f':
      case 'r':
        out.sender = value("-f");
        if (out.sender == "<>") out.sender.clear();
        out.sender_given = true;
        break;
      case 'F':
        out.full_name = value("-F");
        break;
      case 'b': {
        std::string mode = a.substr(2);
        if (mode == "s") {
          out.mode = SendmailArgs::Mode::smtp_on_stdio;
        } else if (mode == "p") {
          out.mode = SendmailArgs::Mode::list;
        } else if (mode != "m") {
          throw InvalidArgument("-b" + mode + " is not supported (-bm, -bs, -bp are)");
        }
        break;
      }
      case 'q':
        out.mode = SendmailArgs::Mode::flush;
        break;
      case 'o':
        if (a == "-oi") out.ignore_dots = true;
        break;  // -oem, -odb, -oQ...: sendmail's, nothing to do here
      case 'B':
      case 'N':
      case 'O':
      case 'C':
      case 'L':
      case 'h':
      case 'R':
      case 'V':
        if (a.size() == 2) ++i;  // its value is the next word
        break;
      case 'v':
      case 'x':
      case 'U':
      case 'm':
      case 'n':
      case 'd':
        break;
      default:
        throw InvalidArgument("unknown option " + a);
    }
  }
  return out;
}

Envelope sendmail_envelope(const SendmailArgs& args, std::istream& in,
                           const std::string& default_sender, size_t max_size) {
  std::string data;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!args.ignore_dots && line == ".") break;
    data += line;
    data += "\r\n";
    if (data.size() > max_size) {
      throw InvalidArgument("the message is larger than " + std::to_string(max_size) + " octets");
    }
  }
  Envelope env;
  env.parse(std::move(data));
  env.sender = args.sender_given ? args.sender : default_sender;
  if (!env.headers.get("From")) {
    std::string from = env.sender.empty() ? "MAILER-DAEMON" : env.sender;
    std::string name;  // a quoted-string: its quotes and backslashes escaped
    for (char c : args.full_name) {
      if (c == '"' || c == '\\') name += '\\';
      name += c;
    }
    // add() refuses a CR or LF in the value: no header is injected through -F.
    env.headers.add("From", name.empty() ? from : "\"" + name + "\" <" + from + ">");
  }
  env.recipients = args.recipients;
  if (args.extract) {
    for (const char* name : {"To", "Cc", "Bcc"}) {
      for (const auto& v : env.headers.get_all(name)) {
        auto addrs = parse_address_list(v);
        env.recipients.insert(env.recipients.end(), addrs.begin(), addrs.end());
      }
    }
    env.headers.remove("Bcc");
  }
  if (env.recipients.empty())
    throw InvalidArgument("no recipient given (or -t and none in To:, Cc:, Bcc:)");
  env.client.protocol = "local";
  return env;
}

}  // namespace slimta::admin
