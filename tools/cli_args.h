// Command-line parsing for the draftwise subcommands: named options (--name VALUE or
// --name=VALUE), boolean flags (--name) and positional arguments, with a usage text.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/status.h"

namespace draftwise {

// Prints `message` to stderr as one line. Messages quote names and text from files, so
// control characters in them (a newline, a terminal escape) are shown as \xNN, and a
// message longer than 1000 bytes is cut, saying how much was left out.
void print_error(std::string_view message);

// Option values: `name` labels errors ("--max-tokens must be an integer, got 'x'").
Expected<int64_t> parse_integer_option(std::string_view name, std::string_view text);
Expected<double> parse_number_option(std::string_view name, std::string_view text);
// "1,2,3" (spaces allowed around the commas).
Expected<std::vector<int32_t>> parse_id_list_option(std::string_view name, std::string_view text);

// --device: "cpu", "cuda" (device 0) or "cuda:N".
struct DeviceOption {
  bool cuda = false;
  int index = 0;
};
Expected<DeviceOption> parse_device_option(std::string_view text);

class ArgParser {
 public:
  ArgParser(std::string command, std::string summary)
      : command_(std::move(command)), summary_(std::move(summary)) {}

  void add_flag(const std::string& name, bool* value, const std::string& help);
  void add_option(const std::string& name, std::string* value, const std::string& value_name,
                  const std::string& help);
  // An option that may be given several times; each value is appended.
  void add_list_option(const std::string& name, std::vector<std::string>* values,
                       const std::string& value_name, const std::string& help);
  void add_positional(const std::string& name, std::string* value, const std::string& help);

  // Parses `args` (the arguments after the subcommand). Errors name the argument.
  // Sets help_requested() on -h/--help instead of failing on missing positionals.
  Status parse(const std::vector<std::string>& args);
  bool help_requested() const { return help_requested_; }
  // Whether --name appeared on the command line (even with an empty value).
  bool given(const std::string& name) const;
  std::string usage() const;

  // parse() for a subcommand's entry point: on a usage error prints it to stderr and
  // returns exit code 2; on --help prints the usage and returns 0; otherwise nullopt, and
  // the command goes on.
  std::optional<int> parse_or_exit_code(const std::vector<std::string>& args);

 private:
  struct Option {
    std::string name;
    bool* flag = nullptr;
    std::string* value = nullptr;
    std::vector<std::string>* list = nullptr;
    std::string value_name;
    std::string help;
  };
  struct Positional {
    std::string name;
    std::string* value;
    std::string help;
  };
  const Option* find(const std::string& name) const;

  std::string command_;
  std::string summary_;
  std::vector<Option> options_;
  std::vector<Positional> positionals_;
  bool help_requested_ = false;
  std::vector<std::string> given_;
};

}  // namespace draftwise
