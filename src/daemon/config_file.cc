#include "config_file.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <ostream>
#include <sstream>

#include <fmt/format.h>

#include "admin/format.h"
#include "disk/permissions.h"
#include "slimta/ascii.h"
#include "slimta/errors.h"
#include "slimta/open_storage.h"

namespace slimta::daemon {
namespace {

// The config keys of `app`'s options: their long names, without help, version and
// --config itself.
std::vector<const CLI::Option*> config_options(const CLI::App& app) {
  std::vector<const CLI::Option*> out;
  for (const CLI::Option* opt : app.get_options()) {
    if (opt->get_lnames().empty()) continue;  // positional
    const std::string& name = opt->get_lnames().front();
    if (name == "help" || name == "version" || name == "config") continue;
    out.push_back(opt);
  }
  return out;
}

std::string key_of(const CLI::Option* opt) { return opt->get_lnames().front(); }

// Why `value` does not suit `opt`, or "" if it does.
std::string type_problem(const CLI::Option* opt, const toml::node& value) {
  if (opt->get_expected_max() == 0)
    return value.is_boolean() ? "" : "takes true or false";  // a flag
  auto scalar_ok = [&](const toml::node& v) {
    const std::string type = opt->get_type_name();
    if (type.starts_with("INT") || type.starts_with("UINT") || type.starts_with("FLOAT"))
      return v.is_number();
    return v.is_string();
  };
  const char* want = [&] {
    const std::string type = opt->get_type_name();
    if (type.starts_with("INT") || type.starts_with("UINT")) return "takes a whole number";
    if (type.starts_with("FLOAT")) return "takes a number";
    return "takes a string";
  }();
  if (opt->get_expected_max() > 1) {  // repeatable: one value or an array of them
    if (const toml::array* array = value.as_array()) {
      for (const toml::node& item : *array)
        if (!scalar_ok(item)) return std::string(want) + " or an array of them";
      return "";
    }
  }
  return scalar_ok(value) ? "" : want;
}

}  // namespace

std::shared_ptr<const ConfigFile> ConfigFile::load(const std::string& path) {
  disk::check_permissions(path, "config file", disk::FileUse::setting);
  try {
    return std::make_shared<const ConfigFile>(ConfigFile{path, toml::parse_file(path)});
  } catch (const toml::parse_error& e) {
    throw InvalidArgument(
        fmt::format("config file '{}' line {}: {}", path, e.source().begin.line, e.description()));
  }
}

InvalidArgument ConfigFile::error(const toml::node& node, const std::string& why) const {
  return InvalidArgument(
      fmt::format("config file '{}' line {}: {}", path, node.source().begin.line, why));
}

namespace {

// A scalar as CLI11's TOML reader gives it: the text of a string, true/false, a number.
std::string config_input(const toml::node& value) {
  if (auto s = value.value_exact<std::string>()) return *s;
  if (auto b = value.value_exact<bool>()) return *b ? "true" : "false";
  if (auto i = value.value_exact<int64_t>()) return std::to_string(*i);
  if (auto d = value.value_exact<double>()) return fmt::format("{}", *d);
  return "";  // a date or a table: check_config_file() refused it already
}

class ParsedConfig : public CLI::ConfigTOML {
 public:
  explicit ParsedConfig(std::shared_ptr<const ConfigFile> config) : config_(std::move(config)) {}
  std::vector<CLI::ConfigItem> from_config(std::istream&) const override {
    std::vector<CLI::ConfigItem> items;
    auto add = [&](const toml::table& table, std::vector<std::string> parents) {
      for (const auto& [key, value] : table) {
        if (value.is_table() || value.is_array_of_tables()) continue;  // not an option
        CLI::ConfigItem item;
        item.parents = parents;
        item.name = std::string(key.str());
        if (const toml::array* list = value.as_array()) {
          for (const toml::node& v : *list) item.inputs.push_back(config_input(v));
        } else {
          item.inputs.push_back(config_input(value));
        }
        items.push_back(std::move(item));
      }
    };
    add(config_->table, {});
    if (const toml::table* serve = config_->table["serve"].as_table()) add(*serve, {"serve"});
    return items;
  }

 private:
  std::shared_ptr<const ConfigFile> config_;
};

}  // namespace

std::shared_ptr<CLI::Config> cli_config(std::shared_ptr<const ConfigFile> config) {
  return std::make_shared<ParsedConfig>(std::move(config));
}

std::optional<std::string> closest(const std::string& word, const std::vector<std::string>& names) {
  std::optional<std::string> best;
  size_t best_distance = 3;
  for (const std::string& name : names) {
    std::vector<size_t> row(name.size() + 1);
    for (size_t j = 0; j <= name.size(); ++j) row[j] = j;
    for (size_t i = 1; i <= word.size(); ++i) {
      size_t diagonal = row[0];
      row[0] = i;
      for (size_t j = 1; j <= name.size(); ++j) {
        size_t up = row[j];
        row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (word[i - 1] != name[j - 1])});
        diagonal = up;
      }
    }
    if (row[name.size()] < best_distance) {
      best_distance = row[name.size()];
      best = name;
    }
  }
  return best;
}

ShapingPolicy read_shaping(const ConfigFile* config) {
  ShapingPolicy shaping;
  if (!config) return shaping;
  auto bad = [&](const toml::node& node, const std::string& why) {
    return config->error(node, why);
  };
  const toml::node* node = config->table.get("destinations");
  if (!node) return shaping;
  const toml::table* table = node->as_table();
  if (!table) throw bad(*node, "destinations must be tables: [destinations.\"example.com\"]");
  // The defaults first, so that each destination starts from them.
  std::vector<std::pair<std::string, const toml::table*>> entries;
  for (const auto& [name, value] : *table) {
    const toml::table* limits = value.as_table();
    if (!limits)
      throw bad(value, "destination '" + std::string(name.str()) +
                           "' must be a table: [destinations.\"" + std::string(name.str()) + "\"]");
    if (name.str() == "*")
      entries.insert(entries.begin(), {"*", limits});
    else
      entries.emplace_back(std::string(name.str()), limits);
  }
  static const std::vector<std::string> kKeys = {"max-connections", "max-rate",
                                                 "max-messages-per-connection", "connect-timeout",
                                                 "idle-timeout"};
  for (const auto& [name, limits] : entries) {
    DestinationLimits l = shaping.defaults;
    for (const auto& entry : *limits) {
      // Not a structured binding: the lambdas below capture it, which clang-tidy's clang
      // (14) does not take yet.
      const toml::node& value = entry.second;
      std::string key(entry.first.str());
      std::string where = "destination '" + name + "' " + key;
      auto whole = [&](int64_t min) {
        auto n = value.value<int64_t>();
        if (!value.is_integer() || !n || *n < min)
          throw bad(value, where + " must be a whole number of at least " + std::to_string(min));
        return static_cast<size_t>(*n);
      };
      auto seconds = [&] {
        auto n = value.value<double>();
        if (!value.is_number() || !n || !(*n > 0))
          throw bad(value, where + " must be a number of seconds more than 0");
        return std::chrono::milliseconds(static_cast<int64_t>(*n * 1000));
      };
      if (key == "max-connections") {
        l.max_connections = whole(1);
      } else if (key == "max-messages-per-connection") {
        l.max_messages_per_connection = whole(0);
      } else if (key == "max-rate") {
        auto text = value.value<std::string>();
        if (!text) throw bad(value, where + " must be a string such as \"10/s\"");
        try {
          l.max_rate = parse_rate(*text);
        } catch (const InvalidArgument& e) {
          throw bad(value, where + ": " + e.what());
        }
      } else if (key == "connect-timeout") {
        l.connect_timeout = seconds();
      } else if (key == "idle-timeout") {
        l.idle_timeout = seconds();
      } else {
        auto near = closest(key, kKeys);
        throw bad(value, "unknown key '" + key + "' in destination '" + name + "'" +
                             (near ? "; did you mean '" + *near + "'?" : ""));
      }
    }
    if (name == "*")
      shaping.defaults = l;
    else
      shaping.destinations[to_lower(name)] = l;
  }
  return shaping;
}

void check_config_file(const ConfigFile& file, const CLI::App& app, const CLI::App& serve) {
  const toml::table& config = file.table;
  const std::string& path = file.path;
  auto keys = [](const CLI::App& owner) {
    std::vector<std::string> out;
    for (const CLI::Option* opt : config_options(owner)) out.push_back(key_of(opt));
    return out;
  };
  const std::vector<std::string> top_keys = keys(app), serve_keys = keys(serve);
  const std::vector<std::string> tables = {"serve", "routes", "listener", "destinations"};
  auto check_section = [&](const toml::table& table, const CLI::App& owner, bool in_serve) {
    std::vector<std::string> names = in_serve ? serve_keys : top_keys;
    if (!in_serve) names.insert(names.end(), tables.begin(), tables.end());
    const std::vector<std::string>& elsewhere = in_serve ? top_keys : serve_keys;
    for (const auto& [k, value] : table) {
      std::string key(k.str());
      auto line = value.source().begin.line;
      if (!in_serve && std::find(tables.begin(), tables.end(), key) != tables.end()) continue;

      std::vector<const CLI::Option*> options = config_options(owner);
      auto opt = std::find_if(options.begin(), options.end(),
                              [&](const CLI::Option* o) { return key_of(o) == key; });
      if (opt == options.end()) {
        std::string hint;
        if (std::find(elsewhere.begin(), elsewhere.end(), key) != elsewhere.end()) {
          hint = in_serve ? "; it belongs at the top of the file, before any [section]"
                          : "; it belongs under [serve]";
        } else if (auto near = closest(key, names)) {
          hint = "; did you mean '" + *near + "'?";
        }
        throw InvalidArgument(fmt::format("config file '{}' line {}: unknown key '{}' {}{}", path,
                                          line, key, in_serve ? "in [serve]" : "at the top", hint));
      }
      if (std::string why = type_problem(*opt, value); !why.empty()) {
        throw InvalidArgument(
            fmt::format("config file '{}' line {}: '{}' {}", path, line, key, why));
      }
    }
  };
  for (const auto& [k, value] : config) {
    if (k != "serve") continue;
    const toml::table* serve_table = value.as_table();
    if (!serve_table) {
      throw InvalidArgument(fmt::format("config file '{}' line {}: serve must be a [serve] table",
                                        path, value.source().begin.line));
    }
    check_section(*serve_table, serve, true);
  }
  check_section(config, app, false);
}

std::string config_path_in(int argc, char** argv, const std::string& installed) {
  bool storage = std::getenv("SLIMTA_STORAGE") != nullptr;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--config" && i + 1 < argc) return argv[i + 1];
    if (arg.starts_with("--config=")) return arg.substr(9);
    storage = storage || arg == "--storage" || arg.starts_with("--storage=");
  }
  if (const char* env = std::getenv("SLIMTA_CONFIG"); env && *env) return env;
  std::error_code ec;
  if (!storage && !installed.empty() && std::filesystem::exists(installed, ec)) return installed;
  return "";
}

void print_effective_config(const CLI::App& app, std::ostream& out) {
  // CLI11 writes every subcommand's options as SUB.KEY=VALUE: the top-level ones and
  // serve's are the configuration; unset ones become comments, so that the output can
  // be read back as a config file.
  std::istringstream in(app.config_to_str(/*default_also=*/true, /*write_description=*/false));
  std::string top, serve;
  for (std::string line; std::getline(in, line);) {
    size_t eq = line.find('=');
    if (eq == std::string::npos) continue;
    std::string key = line.substr(0, eq), value = line.substr(eq + 1);
    std::string* section = &top;
    if (key.starts_with("serve.")) {
      key = key.substr(6);
      section = &serve;
    } else if (key.find('.') != std::string::npos) {
      continue;  // another subcommand's
    }
    if (value == "\"\"") {
      *section += "# " + key + " (not set)\n";
      continue;
    }
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"')
      value = '"' + redact_storage_url(value.substr(1, value.size() - 2)) + '"';
    *section += key + " = " + value + "\n";
  }
  out << top << "\n[serve]\n" << serve;
}

}  // namespace slimta::daemon
