// libFuzzer harness: bytes as the requests and files draftwise reads from users besides
// models: the whole as the body of POST /v1/completions and /v1/chat/completions (serve),
// every line as a batch request line and as a batch output line (--resume), the whole as a
// bench expectations file (--expect) and as a results.json (draftwise report). Nothing may crash,
// hang or trip the sanitizers; a malformed input is an error.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <nlohmann/json.hpp>

#include "tools/batch_lines.h"
#include "tools/bench_expect.h"
#include "tools/bench_report.h"
#include "tools/openai_api.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace draftwise;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)parse_completion_call(text, ApiEndpoint::completions);
  (void)parse_completion_call(text, ApiEndpoint::chat_completions);
  size_t start = 0;
  int64_t number = 0;
  while (start <= text.size()) {
    const size_t newline = text.find('\n', start);
    const std::string_view line = text.substr(start, newline == std::string_view::npos ? text.size() - start
                                                                                        : newline - start);
    nlohmann::json id;
    (void)parse_batch_line(line, ++number, id);
    (void)batch_output_id(line);
    if (newline == std::string_view::npos) break;
    start = newline + 1;
  }
  const nlohmann::json whole = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!whole.is_discarded()) {
    const nlohmann::json overall = whole.is_object() && whole.contains("overall") ? whole["overall"] : whole;
    (void)check_expectations(whole, overall);
    (void)bench_report_files(whole);
  }
  return 0;
}
