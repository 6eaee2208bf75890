// Stop strings over streamed text (OpenAI `stop`): text is released as soon as it can no
// longer be the start of a stop string, and generation ends at the first stop string,
// which is not part of the output.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace draftwise {

class StopStringMatcher {
 public:
  // Empty strings are ignored.
  explicit StopStringMatcher(std::vector<std::string> stop_strings);

  // Adds newly decoded text and returns the text now safe to emit. Once a stop string has
  // appeared this returns the text before it, stopped() turns true, and later text is dropped.
  std::string push(std::string_view text);
  // The text held back when generation ends without a stop string.
  std::string finish();

  bool stopped() const { return stopped_; }
  // The stop string that ended generation; empty until then.
  const std::string& matched() const { return matched_; }

 private:
  std::vector<std::string> stop_strings_;
  std::string pending_;
  std::string matched_;
  bool stopped_ = false;
};

}  // namespace draftwise
