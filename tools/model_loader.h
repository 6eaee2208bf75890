// Loading the models a command runs: a model file or folder, or random weights in a config's
// shape, on the CPU reference or a GPU; and the drafter a --draft spec names.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "draft/drafter.h"
#include "engine/chat_template.h"
#include "engine/draft_spec.h"
#include "engine/tokenizer/tokenizer.h"
#include "target/decoder.h"
#include "tools/cli_args.h"
#include "tools/tensor_parallel_ranks.h"

namespace draftwise {

struct BackendOptions {
  DeviceOption device;
  int threads = 0;               // CPU; 0: every core
  double kv_cache_share = 0.5;   // CUDA
  int64_t context_length = 0;    // 0: the model's
  std::string tokenizer_path;    // --tokenizer: in place of the model's own (or for a model without one)
  TensorParallelOptions tensor_parallel;  // CUDA: --tp, --rank, --rendezvous, --tp-timeout
};

struct LoadedModel {
  std::unique_ptr<Decoder> decoder;
  std::optional<Tokenizer> tokenizer;
  std::string backend;  // for the stats line, e.g. "cpu (2 threads, avx2+fma)"
};

// --device, --threads, --kv-cache-share and --tokenizer as given.
struct BackendArgs {
  std::string device = "cpu";
  std::string threads = "0";
  std::string kv_cache_share = "0.5";
  std::string tokenizer;
  std::string tp = "1";
  std::string rank;
  std::string rendezvous;
  std::string tp_timeout = "120";
};
void add_backend_options(ArgParser& parser, BackendArgs& args);
// The backend options the flags give; errors name the option.
Expected<BackendOptions> parse_backend_options(const BackendArgs& args);

// Seed of the weights --random-weights builds; fixed so that runs compare.
inline constexpr uint64_t kRandomWeightSeed = 1234;

// `path`: a GGUF file or Hugging Face folder (a TTT model's too: model_type "ttt"); with its
// tokenizer when it has one, or the one options.tokenizer_path names.
//
// With --tp N the target is split over N GPUs (tools/tensor_parallel_ranks.h): rank 0 gets a
// TensorParallelDecoder.
Expected<LoadedModel> load_model_file(const std::string& path, const BackendOptions& options);
// A command line with --rank R > 0 (any command's: the launcher starts ranks with rank 0's)
// makes this process a follower: it joins rank 0's group, loads the shard rank 0 names, makes
// rank 0's calls until rank 0 stops, and returns the exit code (0, or 1 with the error
// printed). nullopt: no --rank above 0, the command runs as usual.
std::optional<int> run_as_tensor_parallel_follower(const std::vector<std::string>& args);

// Seeded random weights in the shape of a config.json (a TTT one too); no tokenizer unless
// options.tokenizer_path names one.
Expected<LoadedModel> load_random_model(const std::string& config_path, const BackendOptions& options);

// The tokenizer's chat template, recognised; an error when there is none or it is unknown.
Expected<ChatTemplate> recognize_chat_template(const Tokenizer& tokenizer);
// The tokens that end an answer to a chat turn: the config's EOS ids inside the vocabulary, the
// tokenizer's EOS and the end-of-turn tokens it has (<|im_end|>, <|eot_id|>).
std::vector<int32_t> chat_stop_token_ids(const Decoder& decoder, const Tokenizer& tokenizer);

// The drafter of `spec` for `target`, on the target's backend. A draft model must have the
// target's vocabulary (size, and with tokenizers on both sides every token).
Expected<std::unique_ptr<Drafter>> make_drafter(const DraftSpec& spec, const LoadedModel& target,
                                                const BackendOptions& options);

}  // namespace draftwise
