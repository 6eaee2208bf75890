#include "tools/model_loader.h"

#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "draft/early_exit_drafter.h"
#include "draft/model_drafter.h"
#include "draft/ngram_drafter.h"
#include "engine/tokenizer/tokenizer_loader.h"
#include "kernels/cpu/matmul.h"
#include "target/checkpoint.h"
#include "target/cpu_decoder.h"
#include "target/random_weights.h"
#include "target/tensor_parallel.h"
#include "target/tensor_parallel_decoder.h"
#include "target/tp_control.h"
#include "target/ttt_decoder.h"
#ifdef DRAFTWISE_HAVE_CUDA
#include "kernels/cuda/device.h"
#include "kernels/cuda/nccl_group.h"
#include "target/cuda_decoder.h"
#include "target/cuda_ttt_decoder.h"
#endif

namespace draftwise {

namespace {

std::string backend_name(const CpuDecoder& decoder) {
  return fmt::format("cpu ({} threads, {})", decoder.num_threads(), cpu::cpu_kernel_isa());
}
#ifdef DRAFTWISE_HAVE_CUDA
// "cuda:0 (NVIDIA H200, 139.8 GiB)": the device's index, name and memory.
std::string backend_name(const CudaDecoder& decoder) {
  const Expected<std::vector<CudaDeviceInfo>> devices = list_cuda_devices();
  if (devices.ok()) {
    for (const CudaDeviceInfo& device : *devices) {
      if (fmt::format("cuda:{}", device.index) != decoder.device_name()) continue;
      return fmt::format("{} ({}, {:.1f} GiB)", decoder.device_name(), device.name,
                         static_cast<double>(device.total_bytes) / (1024.0 * 1024.0 * 1024.0));
    }
  }
  return decoder.device_name();
}
#endif

// A model file (`config_path` empty) or random weights on backend D.
template <typename D, typename Options>
Expected<LoadedModel> load_on(const std::string& path, const std::string& config_path, const Options& options) {
  LoadedModel loaded;
  std::unique_ptr<D> decoder;
  if (!config_path.empty()) {
    DW_ASSIGN_OR_RETURN(const ModelConfig config, load_hf_config(config_path));
    DW_ASSIGN_OR_RETURN(decoder, D::create(config, random_weight_loader(kRandomWeightSeed), options));
  } else {
    DW_ASSIGN_OR_RETURN(const Checkpoint checkpoint, Checkpoint::open(path));
    DW_ASSIGN_OR_RETURN(decoder, D::load(checkpoint, options));
    DW_ASSIGN_OR_RETURN(loaded.tokenizer, load_tokenizer(checkpoint));
  }
  loaded.backend = backend_name(*decoder);
  loaded.decoder = std::move(decoder);
  return loaded;
}

// A TTT model (model_type "ttt"): its folder, or random weights in the shape of its config.
Expected<LoadedModel> load_ttt(const std::string& path, const std::string& config_path, const BackendOptions& options) {
  std::unique_ptr<TttModel> model;
  LoadedModel loaded;
  if (!config_path.empty()) {
    DW_ASSIGN_OR_RETURN(const TttConfig config, load_ttt_config(config_path));
    DW_ASSIGN_OR_RETURN(model, TttModel::create_random(config, kRandomWeightSeed));
  } else {
    std::error_code error;
    const std::string folder = std::filesystem::is_directory(path, error)
                                   ? path
                                   : std::filesystem::path(path).parent_path().string();
    DW_ASSIGN_OR_RETURN(model, TttModel::load(folder));
    DW_ASSIGN_OR_RETURN(const Checkpoint checkpoint, Checkpoint::open(folder));
    DW_ASSIGN_OR_RETURN(loaded.tokenizer, load_tokenizer(checkpoint));
  }
  if (options.device.cuda) {
#ifdef DRAFTWISE_HAVE_CUDA
    DW_ASSIGN_OR_RETURN(std::unique_ptr<CudaTttDecoder> gpu,
                        CudaTttDecoder::create(*model, CudaTttDecoderOptions{options.device.index, options.context_length}));
    loaded.backend = fmt::format("{} (TTT)", gpu->device_name());
    loaded.decoder = std::move(gpu);
    return loaded;
#else
    return make_error("--device cuda: this build of draftwise has no CUDA backend (nvcc was not found when it was built)");
#endif
  }
  DW_ASSIGN_OR_RETURN(std::unique_ptr<TttDecoder> decoder,
                      TttDecoder::create(std::move(model), TttDecoderOptions{options.threads, options.context_length}));
  loaded.backend = fmt::format("cpu (TTT reference, {})", cpu::cpu_kernel_isa());
  loaded.decoder = std::move(decoder);
  return loaded;
}

// The config of a model file or of --random-weights, read before anything loads.
Expected<ModelConfig> config_of(const std::string& path, const std::string& config_path) {
  if (!config_path.empty()) return load_hf_config(config_path);
  DW_ASSIGN_OR_RETURN(const Checkpoint checkpoint, Checkpoint::open(path));
  return load_model_config(checkpoint);
}

// What rank 0 tells every other rank to load, right after the rendezvous: the other ranks
// are started with rank 0's command line (or by hand with --tp, --rank, --rendezvous), and
// take the model, its context and cache share from rank 0 so that every shard has the same
// shape and takes the same batches. Paths must name the same files on every machine.
struct ShardLoad {
  std::string path;
  std::string config_path;
  int64_t context_length = 0;
  double kv_cache_share = 0.5;
};

std::vector<uint8_t> encode_shard_load(const ShardLoad& load) {
  const std::string text = nlohmann::json{{"model", load.path},
                                          {"random_weights", load.config_path},
                                          {"context_length", load.context_length},
                                          {"kv_cache_share", load.kv_cache_share}}
                               .dump();
  return std::vector<uint8_t>(text.begin(), text.end());
}

Expected<ShardLoad> decode_shard_load(const std::vector<uint8_t>& bytes) {
  const nlohmann::json json = nlohmann::json::parse(bytes.begin(), bytes.end(), nullptr, false);
  if (!json.is_object() || !json.contains("model") || !json["model"].is_string() || !json.contains("random_weights") ||
      !json["random_weights"].is_string() || !json.contains("context_length") ||
      !json["context_length"].is_number_integer() || !json.contains("kv_cache_share") ||
      !json["kv_cache_share"].is_number()) {
    return make_error("rank 0 sent a load message this rank does not understand (another draftwise version?)");
  }
  return ShardLoad{json["model"].get<std::string>(), json["random_weights"].get<std::string>(),
                   json["context_length"].get<int64_t>(), json["kv_cache_share"].get<double>()};
}

#ifdef DRAFTWISE_HAVE_CUDA
// The group's communicator for this rank, polling the control connections while it waits.
Expected<std::shared_ptr<cuda::NcclGroup>> join_group(const RendezvousResult& formed,
                                                      const std::shared_ptr<ControlPeers>& peers,
                                                      const TensorParallelOptions& tp, int device) {
  cuda::NcclUniqueIdBytes id{};
  if (formed.unique_id.size() != id.size()) {
    return make_error("the rendezvous handed out a {}-byte NCCL id, not {}", formed.unique_id.size(), id.size());
  }
  std::copy(formed.unique_id.begin(), formed.unique_id.end(), reinterpret_cast<uint8_t*>(id.data()));
  std::function<Status()> alive = [peers, leader = tp.rank == 0]() -> Status {
    if (leader) return peers->alive();
    if (!peers->connections().front().open()) return make_error("rank 0 is gone (its connection closed)");
    return {};
  };
  DW_ASSIGN_OR_RETURN(std::unique_ptr<cuda::NcclGroup> group,
                      cuda::NcclGroup::create(id, tp.rank, tp.size, device, std::chrono::milliseconds(tp.timeout_ms),
                                              std::move(alive)));
  return std::shared_ptr<cuda::NcclGroup>(std::move(group));
}

RendezvousOptions rendezvous_options_for(const TensorParallelOptions& tp) {
  RendezvousOptions options;
  options.rank = tp.rank;
  options.size = tp.size;
  options.timeout = std::chrono::milliseconds(tp.timeout_ms);
  options.fingerprint = "draftwise " DRAFTWISE_VERSION;  // one build's protocol
  return options;
}

// Rank 0's shard and the decoder that leads the group (tools/tensor_parallel_ranks.h).
Expected<LoadedModel> load_tensor_parallel(const std::string& path, const std::string& config_path,
                                           const BackendOptions& options, CudaDecoderOptions cuda_options) {
  const TensorParallelOptions& tp = options.tensor_parallel;
  if (tp.rank != 0) return make_error("--rank {}: only rank 0 loads a model to serve; the others follow it", tp.rank);
  DW_ASSIGN_OR_RETURN(const ModelConfig config, config_of(path, config_path));
  // A model that does not split is refused before any rank starts.
  DW_TRY(check_tensor_parallel(config, tp.size));
  std::shared_ptr<LaunchedRanks> launched;
  RendezvousOptions rendezvous_options = rendezvous_options_for(tp);
  if (tp.rendezvous.empty()) {
    DW_ASSIGN_OR_RETURN(const uint16_t port, free_local_port());
    rendezvous_options.address = RendezvousAddress{"127.0.0.1", port};
    DW_ASSIGN_OR_RETURN(launched, launch_ranks(tp.size, port, options.device.index));
  } else {
    DW_ASSIGN_OR_RETURN(rendezvous_options.address, parse_rendezvous_address(tp.rendezvous));
  }
  DW_ASSIGN_OR_RETURN(const cuda::NcclUniqueIdBytes id, cuda::NcclGroup::unique_id());
  DW_ASSIGN_OR_RETURN(RendezvousResult formed,
                      rendezvous(rendezvous_options, {reinterpret_cast<const uint8_t*>(id.data()), id.size()}));
  auto peers = std::make_shared<ControlPeers>(std::move(formed.peers));
  DW_TRY(peers->broadcast(encode_shard_load({path, config_path, cuda_options.context_length,
                                             cuda_options.kv_cache_memory_share})));
  DW_ASSIGN_OR_RETURN(cuda_options.tensor_parallel, join_group(formed, peers, tp, cuda_options.device));
  DW_ASSIGN_OR_RETURN(LoadedModel loaded, load_on<CudaDecoder>(path, config_path, cuda_options));
  auto decoder = std::make_unique<TensorParallelDecoder>(std::move(loaded.decoder), peers, tp.size);
  if (launched != nullptr) decoder->hold_until_stopped(std::move(launched));
  loaded.backend = fmt::format("{}, tensor parallel over {} GPUs", loaded.backend, tp.size);
  loaded.decoder = std::move(decoder);
  return loaded;
}

// A rank above 0: joins, loads what rank 0 says, follows until rank 0 stops.
Status follow_as_rank(const TensorParallelOptions& tp, int device) {
  RendezvousOptions rendezvous_options = rendezvous_options_for(tp);
  DW_ASSIGN_OR_RETURN(rendezvous_options.address, parse_rendezvous_address(tp.rendezvous));
  DW_ASSIGN_OR_RETURN(RendezvousResult formed, rendezvous(rendezvous_options, {}));
  auto peers = std::make_shared<ControlPeers>(std::move(formed.peers));
  const ControlConnection& leader = peers->connections().front();
  DW_ASSIGN_OR_RETURN(const std::vector<uint8_t> message, leader.receive(std::chrono::milliseconds(tp.timeout_ms)));
  DW_ASSIGN_OR_RETURN(const ShardLoad load, decode_shard_load(message));
  CudaDecoderOptions cuda_options;
  cuda_options.device = device;
  cuda_options.context_length = load.context_length;
  cuda_options.kv_cache_memory_share = load.kv_cache_share;
  DW_ASSIGN_OR_RETURN(cuda_options.tensor_parallel, join_group(formed, peers, tp, device));
  DW_ASSIGN_OR_RETURN(LoadedModel loaded, load_on<CudaDecoder>(load.path, load.config_path, cuda_options));
  return follow_leader(*loaded.decoder, leader);
}
#endif

// The model, then the tokenizer --tokenizer names in place of its own.
Expected<LoadedModel> load_backend(const std::string& path, const std::string& config_path,
                                   const BackendOptions& options);

Expected<LoadedModel> load(const std::string& path, const std::string& config_path, const BackendOptions& options) {
  DW_ASSIGN_OR_RETURN(LoadedModel loaded, load_backend(path, config_path, options));
  if (!options.tokenizer_path.empty()) {
    Expected<Tokenizer> tokenizer = load_tokenizer_from(options.tokenizer_path);
    if (!tokenizer.ok()) return make_error("--tokenizer {}", tokenizer.error().message);
    const int64_t model_vocab = loaded.decoder->config().vocab_size;
    if (tokenizer->vocab_size() > model_vocab) {
      return make_error("--tokenizer {}: {} tokens, more than the model's {} vocabulary rows", options.tokenizer_path,
                        tokenizer->vocab_size(), model_vocab);
    }
    loaded.tokenizer = std::move(*tokenizer);
  }
  return loaded;
}

Expected<LoadedModel> load_backend(const std::string& path, const std::string& config_path,
                                   const BackendOptions& options) {
  if (!(options.kv_cache_share > 0 && options.kv_cache_share <= 1)) {
    return make_error("--kv-cache-share must be in (0, 1], got {}", options.kv_cache_share);
  }
  const bool tensor_parallel = options.tensor_parallel.size > 1;
  if (tensor_parallel && !options.device.cuda) {
    return make_error("--tp {} splits the model over GPUs: add --device cuda", options.tensor_parallel.size);
  }
  if (is_ttt_model_folder(config_path.empty() ? path : config_path)) {
    if (tensor_parallel) return make_error("--tp: a TTT model runs on one GPU");
    return load_ttt(path, config_path, options);
  }
  if (options.device.cuda) {
#ifdef DRAFTWISE_HAVE_CUDA
    CudaDecoderOptions cuda_options;
    cuda_options.device = options.device.index;
    cuda_options.context_length = options.context_length;
    cuda_options.kv_cache_memory_share = options.kv_cache_share;
    if (tensor_parallel) return load_tensor_parallel(path, config_path, options, cuda_options);
    return load_on<CudaDecoder>(path, config_path, cuda_options);
#else
    return make_error("--device cuda: this build of draftwise has no CUDA backend (nvcc was not found when it was built)");
#endif
  }
  return load_on<CpuDecoder>(path, config_path, CpuDecoderOptions{options.threads, options.context_length});
}

}  // namespace

void add_backend_options(ArgParser& parser, BackendArgs& args) {
  parser.add_option("device", &args.device, "cpu|cuda[:N]", "where the model runs (default cpu)");
  parser.add_option("threads", &args.threads, "N", "CPU threads; 0 uses every core (default 0)");
  parser.add_option("kv-cache-share", &args.kv_cache_share, "F",
                    "CUDA: share of the GPU memory left after the weights for the key/value cache (default 0.5)");
  parser.add_option("tokenizer", &args.tokenizer, "PATH",
                    "a tokenizer in place of the model's own: tokenizer.json, its folder, or a GGUF file");
  parser.add_option("tp", &args.tp, "N",
                    "CUDA: split the target over N GPUs, one process each (tensor parallelism; default 1). Alone, "
                    "rank 0 starts the other ranks on this machine (GPUs D..D+N-1 of --device cuda:D)");
  parser.add_option("rank", &args.rank, "R",
                    "with --tp: this process's rank on a group spread over machines (0 serves; others follow it)");
  parser.add_option("rendezvous", &args.rendezvous, "HOST:PORT",
                    "with --tp and --rank: where rank 0 listens for the other ranks");
  parser.add_option("tp-timeout", &args.tp_timeout, "S",
                    "with --tp: seconds the group waits for a rank (joining, every step) before failing (default 120)");
}

Expected<BackendOptions> parse_backend_options(const BackendArgs& args) {
  BackendOptions options;
  DW_ASSIGN_OR_RETURN(const int64_t thread_count, parse_integer_option("--threads", args.threads));
  if (thread_count < 0 || thread_count > 1024) return make_error("--threads must be in [0, 1024]");
  options.threads = static_cast<int>(thread_count);
  DW_ASSIGN_OR_RETURN(options.device, parse_device_option(args.device));
  DW_ASSIGN_OR_RETURN(options.kv_cache_share, parse_number_option("--kv-cache-share", args.kv_cache_share));
  options.tokenizer_path = args.tokenizer;
  DW_ASSIGN_OR_RETURN(options.tensor_parallel,
                      parse_tensor_parallel_options(args.tp, args.rank, args.rendezvous, args.tp_timeout));
  return options;
}

Expected<ChatTemplate> recognize_chat_template(const Tokenizer& tokenizer) {
  if (!tokenizer.chat_template()) return make_error("the model has no chat template");
  const auto token_text = [&](std::optional<int32_t> id) { return id ? tokenizer.token(*id) : std::string(); };
  return ChatTemplate::recognize(*tokenizer.chat_template(), token_text(tokenizer.bos_id()),
                                 token_text(tokenizer.eos_id()));
}

std::vector<int32_t> chat_stop_token_ids(const Decoder& decoder, const Tokenizer& tokenizer) {
  std::vector<int32_t> ids;
  for (const int64_t id : decoder.config().eos_token_ids) {
    if (id >= 0 && id < decoder.config().vocab_size) ids.push_back(static_cast<int32_t>(id));
  }
  if (tokenizer.eos_id()) ids.push_back(*tokenizer.eos_id());
  for (const char* end_of_turn : {"<|im_end|>", "<|eot_id|>"}) {
    if (const std::optional<int32_t> id = tokenizer.find(end_of_turn)) ids.push_back(*id);
  }
  return ids;
}

std::optional<int> run_as_tensor_parallel_follower(const std::vector<std::string>& args) {
  // Only the flags a follower needs, wherever they are in a command line of rank 0's kind.
  const auto value_of = [&](std::string_view name) -> std::optional<std::string> {
    std::optional<std::string> found;
    for (size_t i = 0; i < args.size(); ++i) {
      const std::string flag = "--" + std::string(name);
      if (args[i] == flag && i + 1 < args.size()) found = args[i + 1];
      if (args[i].rfind(flag + "=", 0) == 0) found = args[i].substr(flag.size() + 1);
    }
    return found;
  };
  const std::optional<std::string> rank = value_of("rank");
  if (!rank || *rank == "0") return std::nullopt;
  const auto fail = [&](const Error& error) {
    print_error(fmt::format("draftwise: tensor-parallel rank {}: {}", *rank, error.message));
    return 1;
  };
  Expected<TensorParallelOptions> tp = parse_tensor_parallel_options(
      value_of("tp").value_or("1"), *rank, value_of("rendezvous").value_or(""), value_of("tp-timeout").value_or("120"));
  if (!tp.ok()) return fail(tp.error());
  Expected<DeviceOption> device = parse_device_option(value_of("device").value_or("cpu"));
  if (!device.ok()) return fail(device.error());
  if (!device->cuda) return fail(make_error("--tp splits the model over GPUs: add --device cuda"));
#ifdef DRAFTWISE_HAVE_CUDA
  if (const Status followed = follow_as_rank(*tp, device->index); !followed.ok()) return fail(followed.error());
  return 0;
#else
  return fail(make_error("this build of draftwise has no CUDA backend (nvcc was not found when it was built)"));
#endif
}

Expected<LoadedModel> load_model_file(const std::string& path, const BackendOptions& options) {
  return load(path, "", options);
}

Expected<LoadedModel> load_random_model(const std::string& config_path, const BackendOptions& options) {
  return load("", config_path, options);
}

Expected<std::unique_ptr<Drafter>> make_drafter(const DraftSpec& spec, const LoadedModel& target,
                                                const BackendOptions& options) {
  switch (spec.kind) {
    case DraftSpec::Kind::ngram: {
      DW_ASSIGN_OR_RETURN(std::unique_ptr<NgramDrafter> drafter, NgramDrafter::create(spec.n));
      return std::unique_ptr<Drafter>(std::move(drafter));
    }
    case DraftSpec::Kind::self: {
      DW_ASSIGN_OR_RETURN(std::unique_ptr<EarlyExitDrafter> drafter,
                          EarlyExitDrafter::create(*target.decoder, spec.exit_layer));
      return std::unique_ptr<Drafter>(std::move(drafter));
    }
    case DraftSpec::Kind::model: {
      // The draft model keeps its own context; it stops proposing when that is full.
      BackendOptions draft_options = options;
      draft_options.context_length = 0;
      draft_options.tokenizer_path.clear();  // its own, compared with the target's below
      draft_options.tensor_parallel = {};    // the draft model runs whole, on rank 0's GPU
      Expected<LoadedModel> draft = load_model_file(spec.path, draft_options);
      if (!draft.ok()) return make_error("{}: {}", spec.name, draft.error().message);
      const int64_t draft_vocab = draft->decoder->config().vocab_size;
      const int64_t target_vocab = target.decoder->config().vocab_size;
      if (draft_vocab != target_vocab) {
        return make_error("{}: the draft model has {} vocabulary rows, the target {}", spec.name, draft_vocab,
                          target_vocab);
      }
      if (draft->tokenizer.has_value() != target.tokenizer.has_value()) {
        return make_error("{}: {} has a tokenizer and {} has none, so their vocabularies cannot be compared",
                          spec.name, target.tokenizer ? "the target" : "the draft model",
                          target.tokenizer ? "the draft model" : "the target");
      }
      if (target.tokenizer) {
        if (const Status same = check_same_vocabulary(*target.tokenizer, *draft->tokenizer); !same.ok()) {
          return make_error("{}: {}", spec.name, same.error().message);
        }
      }
      return std::unique_ptr<Drafter>(std::make_unique<ModelDrafter>(std::move(draft->decoder), spec.name));
    }
  }
  return make_error("{}: unknown drafting kind", spec.name);
}

}  // namespace draftwise
