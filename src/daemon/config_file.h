// The config file, checked strictly: CLI11 reads the options it knows from it and
// silently passes over the rest, so a typo (`smarthst = ...`) or a key in the wrong
// section would change where mail goes without a word.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <toml++/toml.h>
#include <CLI/CLI.hpp>

#include "slimta/errors.h"
#include "slimta/shaping.h"

namespace slimta::daemon {

// The name in `names` fewest edits (Levenshtein) from `word`, if one is 2 or fewer away.
std::optional<std::string> closest(const std::string& word, const std::vector<std::string>& names);

// The config file, parsed once per start or reload: CLI11 takes its options from this
// table (cli_config), and the strict check, [destinations], [routes] and [[listener]]
// read the same table.
struct ConfigFile {
  std::string path;
  toml::table table;
  // Parses the file at `path`; a syntax error throws InvalidArgument naming the file
  // and line.
  static std::shared_ptr<const ConfigFile> load(const std::string& path);
  // InvalidArgument "config file 'PATH' line N: `why`".
  InvalidArgument error(const toml::node& node, const std::string& why) const;
};

// What CLI11 reads for --config: the options of `config`'s table (top-level keys, and
// [serve]'s as serve's), as CLI11's own TOML reader would give them, without reading
// the file again.
std::shared_ptr<CLI::Config> cli_config(std::shared_ptr<const ConfigFile> config);

// Checks `config` against the options of `app` (top-level keys) and of
// its subcommand `serve` ([serve]), and the tables serve reads itself ([routes],
// [[listener]]). A key that is not one of them, or whose value has the wrong type for
// its option (a flag takes true/false, a number a number, a list a string or an array of
// strings), throws InvalidArgument "config file 'PATH' line N: ..." naming the key and,
// for an unknown one, the closest known key. A file that does not parse throws too.
void check_config_file(const ConfigFile& config, const CLI::App& app, const CLI::App& serve);

// The [destinations."NAME"] tables of `config` (null: none, the defaults): each
// destination's max-connections, max-rate ("10/s"), max-messages-per-connection,
// connect-timeout and idle-timeout (seconds); [destinations."*"] sets the defaults of
// all. An unknown key or a bad value throws InvalidArgument naming it and its line.
ShapingPolicy read_shaping(const ConfigFile* config);

// The --config value in argv (looked up before CLI11 reads the file); without one,
// $SLIMTA_CONFIG (how sendmail, which takes sendmail's options, is pointed at one); then
// `installed` (the package's configuration) when it exists and neither --storage nor
// $SLIMTA_STORAGE names a storage (as Postfix's tools read main.cf); else "".
std::string config_path_in(int argc, char** argv, const std::string& installed = "");

// The effective configuration: every option, from the command line, the config file or
// its default, as TOML (CLI11's own writer), secrets masked.
void print_effective_config(const CLI::App& app, std::ostream& out);

}  // namespace slimta::daemon
