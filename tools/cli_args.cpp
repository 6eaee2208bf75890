#include "tools/cli_args.h"

#include <charconv>
#include <cmath>
#include <limits>

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
  options_.push_back({name, value, nullptr, nullptr, "", help});
}

void ArgParser::add_option(const std::string& name, std::string* value,
                           const std::string& value_name, const std::string& help) {
  options_.push_back({name, nullptr, value, nullptr, value_name, help});
}

void ArgParser::add_list_option(const std::string& name, std::vector<std::string>* values,
                                const std::string& value_name, const std::string& help) {
  options_.push_back({name, nullptr, nullptr, values, value_name, help + " (repeatable)"});
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
      given_.push_back(name);
      if (option->flag != nullptr) {
        if (equals != std::string::npos) {
          return make_error("draftwise {}: --{} takes no value", command_, name);
        }
        *option->flag = true;
      } else if (equals != std::string::npos || i + 1 < args.size()) {
        std::string value = equals != std::string::npos ? arg.substr(equals + 1) : args[++i];
        if (option->list != nullptr) {
          option->list->push_back(std::move(value));
        } else {
          *option->value = std::move(value);
        }
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

bool ArgParser::given(const std::string& name) const {
  return std::find(given_.begin(), given_.end(), name) != given_.end();
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

Expected<int64_t> parse_integer_option(std::string_view name, std::string_view text) {
  int64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error == std::errc::result_out_of_range) {
    return make_error("{} {} is out of range", name, text);
  }
  if (error != std::errc() || end != text.data() + text.size() || text.empty()) {
    return make_error("{} must be an integer, got '{}'", name, text);
  }
  return value;
}

Expected<double> parse_number_option(std::string_view name, std::string_view text) {
  double value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || text.empty() ||
      !std::isfinite(value)) {
    return make_error("{} must be a finite number, got '{}'", name, text);
  }
  return value;
}

Expected<std::vector<int32_t>> parse_id_list_option(std::string_view name, std::string_view text) {
  std::vector<int32_t> ids;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(',', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view item = text.substr(start, end - start);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    DW_ASSIGN_OR_RETURN(const int64_t id, parse_integer_option(name, item));
    if (id < 0 || id > std::numeric_limits<int32_t>::max()) {
      return make_error("{}: token id {} is out of range", name, id);
    }
    ids.push_back(static_cast<int32_t>(id));
    start = end + 1;
  }
  return ids;
}

Expected<DeviceOption> parse_device_option(std::string_view text) {
  if (text == "cpu") return DeviceOption{};
  if (text == "cuda") return DeviceOption{true, 0};
  if (text.starts_with("cuda:")) {
    const Expected<int64_t> index = parse_integer_option("--device cuda:N", text.substr(5));
    if (index.ok() && *index >= 0 && *index < 1024) return DeviceOption{true, static_cast<int>(*index)};
  }
  return make_error("--device must be cpu, cuda or cuda:N, got '{}'", text);
}

}  // namespace draftwise
