// The config file, checked strictly: CLI11 reads the options it knows from it and
// silently passes over the rest, so a typo (`smarthst = ...`) or a key in the wrong
// section would change where mail goes without a word.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <toml++/toml.h>
#include <CLI/CLI.hpp>

#include "slimta/shaping.h"

namespace slimta::daemon {

// The name in `names` fewest edits (Levenshtein) from `word`, if one is 2 or fewer away.
std::optional<std::string> closest(const std::string& word, const std::vector<std::string>& names);

// The config file at `path`, parsed; a syntax error throws InvalidArgument naming the
// file and line.
toml::table parse_config_file(const std::string& path);

// Checks the config file at `path` against the options of `app` (top-level keys) and of
// its subcommand `serve` ([serve]), and the tables serve reads itself ([routes],
// [[listener]]). A key that is not one of them, or whose value has the wrong type for
// its option (a flag takes true/false, a number a number, a list a string or an array of
// strings), throws InvalidArgument "config file 'PATH' line N: ..." naming the key and,
// for an unknown one, the closest known key. A file that does not parse throws too.
void check_config_file(const std::string& path, const CLI::App& app, const CLI::App& serve);

// The [destinations."NAME"] tables of the config file at `path` ("" for none): each
// destination's max-connections, max-rate ("10/s"), max-messages-per-connection,
// connect-timeout and idle-timeout (seconds); [destinations."*"] sets the defaults of
// all. An unknown key or a bad value throws InvalidArgument naming it and its line.
ShapingPolicy read_shaping(const std::string& path);

// The --config value in argv, or "" (looked up before CLI11 reads the file).
std::string config_path_in(int argc, char** argv);

// The effective configuration: every option, from the command line, the config file or
// its default, as TOML (CLI11's own writer), secrets masked.
void print_effective_config(const CLI::App& app, std::ostream& out);

}  // namespace slimta::daemon
