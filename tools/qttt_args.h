// The --qttt flag that generate, batch and serve share (QTTT.md, target/qttt.h), and the report
// of one request's query adaptation as the commands and the server give it.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "target/model_config.h"
#include "target/qttt.h"
#include "tools/cli_args.h"

namespace draftwise {

// --qttt SPEC into `spec`, which starts as "off"; `prompts` says whose prompts adapt ("the
// prompt", "each request's prompt").
void add_qttt_option(ArgParser& parser, std::string& spec, std::string_view prompts);

// "off" (none), "on" or parse_qtt_spec's key=value pairs. Errors name the flag and the key.
Expected<std::optional<QttOptions>> parse_qttt_option(std::string_view spec);

// `options` checked against the model (check_qtt_options); errors name the flag and the key.
Status check_qttt_option(const std::optional<QttOptions>& options, const ModelConfig& config);

// {"spec", "steps", "span", "context", "losses", "first_loss", "last_loss", "seconds", "flops",
// "parameter_bytes"}: spec as qtt_spec writes it; span and context as adapt_queries used them.
nlohmann::json qttt_json(const QttReport& report);

// "qttt: 16 steps of 128 tokens, loss 3.21 → 2.45 in 1.23 s"
std::string qttt_summary(const QttReport& report);

}  // namespace draftwise
