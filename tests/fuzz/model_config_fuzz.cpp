// libFuzzer harness: bytes as a config.json (attention and TTT) and as a chat template. A config that parses
// and is small is built with random weights and run forward, so shape checks are fuzzed
// along with the parser. Nothing may crash, hang or trip the sanitizers.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "engine/chat_template.h"
#include "target/cpu_decoder.h"
#include "target/model_config.h"
#include "target/random_weights.h"
#include "target/ttt_decoder.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace draftwise;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const Expected<ModelConfig> config = parse_hf_config(text, "fuzz");
  if (config.ok() && decoder_parameter_count(*config) < 2e5 && config->num_layers <= 4 &&
      config->head_dim <= 256) {
    auto decoder = CpuDecoder::create(*config, random_weight_loader(1), CpuDecoderOptions{1, 16});
    if (decoder.ok()) {
      const SequenceId sequence = (*decoder)->create_sequence();
      const int32_t last = static_cast<int32_t>(config->vocab_size - 1);
      const std::vector<int32_t> tokens = {0, last, 0};
      const std::vector<int32_t> rows = {0, 2};
      const ForwardRequest request{sequence, tokens, rows};
      std::vector<float> logits;
      (void)(*decoder)->forward(std::span(&request, 1), logits);
      (void)(*decoder)->truncate_sequence(sequence, 1);
      (void)(*decoder)->forward(std::span(&request, 1), logits);
    }
  }
  // The same bytes as a TTT config; a small one is built and run, with a rollback.
  const nlohmann::json json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (const Expected<TttConfig> ttt = parse_ttt_config(json); ttt.ok() && ttt_parameter_count(*ttt) < 2e5 &&
                                                             ttt->num_layers <= 4 && ttt->conv_kernel <= 8) {
    auto model = TttModel::create_random(*ttt, 1);
    if (model.ok()) {
      auto decoder = TttDecoder::create(std::move(*model), TttDecoderOptions{1, 64});
      if (decoder.ok()) {
        const SequenceId sequence = (*decoder)->create_sequence();
        const std::vector<int32_t> tokens = {0, static_cast<int32_t>(ttt->vocab_size - 1), 0};
        const std::vector<int32_t> rows = {0, 2};
        const ForwardRequest request{sequence, tokens, rows};
        std::vector<float> logits;
        (void)(*decoder)->forward(std::span(&request, 1), logits);
        (void)(*decoder)->truncate_sequence(sequence, 1);
        (void)(*decoder)->forward(std::span(&request, 1), logits);
      }
    }
  }
  const Expected<ChatTemplate> chat = ChatTemplate::recognize(text, "<s>", "</s>");
  if (chat.ok()) {
    const std::vector<ChatMessage> messages = {
        {"system", " sys "}, {"user", "hi"}, {"assistant", "hello"}, {"user", std::string(text.substr(0, 64))}};
    (void)chat->render(messages, true);
    (void)chat->render(std::span(messages).subspan(1), false);
  }
  return 0;
}
