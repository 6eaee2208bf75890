#include "tools/cli_args.h"

#include <algorithm>
#include <cstdio>

namespace draftwise {

void print_error(std::string_view message) {
  constexpr size_t kMaxBytes = 1000;
  const size_t left_out = message.size() > kMaxBytes ? message.size() - kMaxBytes : 0;
  std::string line;
  line.reserve(std::min(message.size(), kMaxBytes) + 32);
  for (const char c : message.substr(0, kMaxBytes)) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f) {
      line += fmt::format("\\x{:02x}", byte);
    } else {
      line += c;
    }
  }
  if (left_out > 0) line += fmt::format("... ({} more bytes)", left_out);
  fmt::print(stderr, "{}\n", line);
}

void ArgParser::add_flag(const std::string& name, bool* value, const std::string& help) {
  options_.push_back({name, value, nullptr, "", help});
}

void ArgParser::add_option(const std::string& name, std::string* value,
                           const std::string& value_name, const std::string& help) {
  options_.push_back({name, nullptr, value, value_name, help});
}

void ArgParser::add_positional(const std::string& name, std::string* value,
                               const std::string& help) {
  positionals_.push_back({name, value, help});
}

const ArgParser::Option* ArgParser::find(const std::string& name) const {
  for (const Option& option : options_) {
    if (option.name == name) return &option;
  }
  return nullptr;
}

Status ArgParser::parse(const std::vector<std::string>& args) {
  size_t next_positional = 0;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "-h" || arg == "--help") {
      help_requested_ = true;
      return {};
    }
    if (arg.size() > 2 && arg.starts_with("--")) {
      const size_t equals = arg.find('=');
      const std::string name =
          arg.substr(2, equals == std::string::npos ? std::string::npos : equals - 2);
      const Option* option = find(name);
      if (option == nullptr) {
        return make_error("draftwise {}: unknown option '--{}' (see --help)", command_, name);
      }
      if (option->flag != nullptr) {
        if (equals != std::string::npos) {
          return make_error("draftwise {}: --{} takes no value", command_, name);
        }
        *option->flag = true;
      } else if (equals != std::string::npos) {
        *option->value = arg.substr(equals + 1);
      } else if (i + 1 < args.size()) {
        *option->value = args[++i];
      } else {
        return make_error("draftwise {}: --{} needs a value ({})", command_, name,
                          option->value_name);
      }
      continue;
    }
    if (next_positional >= positionals_.size()) {
      return make_error("draftwise {}: unexpected argument '{}' (see --help)", command_, arg);
    }
    *positionals_[next_positional++].value = arg;
  }
  if (next_positional < positionals_.size()) {
    return make_error("draftwise {}: missing {} (see --help)", command_,
                      positionals_[next_positional].name);
  }
  return {};
}

std::optional<int> ArgParser::parse_or_exit_code(const std::vector<std::string>& args) {
  if (Status parsed = parse(args); !parsed.ok()) {
    print_error(parsed.error().message);
    return 2;
  }
  if (help_requested_) {
    fmt::print("{}", usage());
    return 0;
  }
  return std::nullopt;
}

std::string ArgParser::usage() const {
  std::string text = "usage: draftwise " + command_;
  for (const Positional& positional : positionals_) text += " " + positional.name;
  if (!options_.empty()) text += " [options]";
  text += "\n\n" + summary_ + "\n";
  if (!positionals_.empty()) text += "\narguments:\n";
  for (const Positional& positional : positionals_) {
    text += fmt::format("  {:<24} {}\n", positional.name, positional.help);
  }
  if (!options_.empty()) text += "\noptions:\n";
  for (const Option& option : options_) {
    const std::string spelled =
        option.flag != nullptr ? "--" + option.name : "--" + option.name + " " + option.value_name;
    text += fmt::format("  {:<24} {}\n", spelled, option.help);
  }
  return text;
}

}  // namespace draftwise
