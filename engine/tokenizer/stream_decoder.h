// Incremental detokenization for streaming: tokens go in one at a time and only whole
// UTF-8 characters come out. Bytes of a character split across tokens are held back until
// the character is complete; bytes that can never become valid come out as U+FFFD. The
// concatenated output equals Tokenizer::decode of all the tokens.
#pragma once

#include <cstdint>
#include <string>

#include "engine/tokenizer/tokenizer.h"

namespace draftwise {

class StreamDecoder {
 public:
  // `at_sequence_start`: the first token begins the text, so SentencePiece's dummy-prefix
  // space is removed as decode() does; false when continuing text decoded elsewhere.
  StreamDecoder(const Tokenizer& tokenizer, bool skip_special, bool at_sequence_start);

  // Text completed by `id` (possibly empty).
  std::string push(int32_t id);
  // Whatever is still held back, with an unfinished character as U+FFFD.
  std::string finish();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  bool strip_leading_space_;
  std::string pending_;
};

}  // namespace draftwise
