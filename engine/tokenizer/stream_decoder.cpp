#include "engine/tokenizer/stream_decoder.h"

#include "engine/tokenizer/unicode.h"

namespace draftwise {

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special, bool at_sequence_start)
    : tokenizer_(tokenizer),
      skip_special_(skip_special),
      strip_leading_space_(at_sequence_start && tokenizer.strips_leading_space()) {}

std::string StreamDecoder::push(int32_t id) {
  std::string bytes = tokenizer_.token_bytes(id, skip_special_);
  if (strip_leading_space_ && !bytes.empty()) {
    if (bytes[0] == ' ') bytes.erase(0, 1);
    strip_leading_space_ = false;
  }
  pending_ += bytes;
  const size_t held = unicode::incomplete_utf8_suffix(pending_);
  std::string ready =
      tokenizer_.bytes_to_text(std::string_view(pending_).substr(0, pending_.size() - held));
  pending_.erase(0, pending_.size() - held);
  return ready;
}

std::string StreamDecoder::finish() {
  std::string rest = tokenizer_.bytes_to_text(pending_);
  pending_.clear();
  return rest;
}

}  // namespace draftwise
