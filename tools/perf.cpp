// draftwise perf: decode and prefill speed on one GPU against the GPU's own ceilings, all
// measured in one run (docs/perf.md). The ceilings: device-to-device copy bandwidth (bytes
// read + written per second) and the bf16 GEMM rate of an 8192³ product through cuBLASLt.
// Decode figures are fractions of the bandwidth bound (bytes a step must read ÷ measured
// bandwidth); prefill figures fractions of the GEMM rate. Times are CUDA events on the
// decoder's stream, after warm-up, medians over repeats.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "kernels/random.h"
#include "target/checkpoint.h"
#include "target/model_weights.h"
#include "target/qttt.h"
#include "tools/cli_args.h"
#include "tools/commands.h"
#ifdef DRAFTWISE_HAVE_CUDA
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/ops.h"
#include "target/cuda_decoder.h"
#endif

namespace draftwise {

#ifndef DRAFTWISE_HAVE_CUDA

int run_perf(const std::vector<std::string>&) {
  print_error("draftwise perf: this build of draftwise has no CUDA backend (nvcc was not found when it was built)");
  return 1;
}

#else

namespace {

constexpr uint64_t kRandomWeightSeed = 1234;

struct PerfArgs {
  std::vector<std::string> models;
  std::vector<std::string> random_weights;
  std::string device = "cuda";
  std::string batches = "1,8,32";
  std::string contexts = "512,4096";
  std::string prefill = "2048";
  std::string steps = "32";
  std::string repeats = "5";
  std::string json_path;
  std::string markdown_path;
  bool no_programmatic_launch = false;
  bool no_cluster_merge = false;
  bool no_fused = false;
};

struct Settings {
  int device = 0;
  std::vector<int32_t> batches;
  std::vector<int32_t> contexts;
  int64_t prefill = 0;
  int64_t steps = 0;
  int64_t repeats = 0;
  bool fused = true;
};

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

// CUDA events around enqueued work; elapsed milliseconds after both have passed.
class EventTimer {
 public:
  static Expected<EventTimer> create() {
    EventTimer timer;
    DW_CUDA_TRY(cudaEventCreate(&timer.start_));
    DW_CUDA_TRY(cudaEventCreate(&timer.stop_));
    return timer;
  }
  EventTimer() = default;
  EventTimer(EventTimer&& other) noexcept
      : start_(std::exchange(other.start_, nullptr)), stop_(std::exchange(other.stop_, nullptr)) {}
  EventTimer& operator=(EventTimer&&) = delete;
  ~EventTimer() {
    if (start_ != nullptr) cudaEventDestroy(start_);
    if (stop_ != nullptr) cudaEventDestroy(stop_);
  }
  Status start(cudaStream_t stream) { return cuda_status(cudaEventRecord(start_, stream), "cudaEventRecord"); }
  Expected<double> stop(cudaStream_t stream) {
    DW_CUDA_TRY(cudaEventRecord(stop_, stream));
    DW_CUDA_TRY(cudaEventSynchronize(stop_));
    float ms = 0.0f;
    DW_CUDA_TRY(cudaEventElapsedTime(&ms, start_, stop_));
    return static_cast<double>(ms);
  }

 private:
  cudaEvent_t start_ = nullptr;
  cudaEvent_t stop_ = nullptr;
};

// Device-to-device copy of 1 GiB, bytes read plus bytes written per second.
Expected<double> copy_bandwidth(cudaStream_t stream, int64_t repeats) {
  constexpr size_t kBytes = size_t{1} << 30;
  DW_ASSIGN_OR_RETURN(cuda::DeviceBuffer source, cuda::DeviceBuffer::allocate(kBytes, "the copy benchmark"));
  DW_ASSIGN_OR_RETURN(cuda::DeviceBuffer target, cuda::DeviceBuffer::allocate(kBytes, "the copy benchmark"));
  DW_CUDA_TRY(cuda::fill_uniform_bf16(source.as<cuda::bf16>(), kBytes / 2, 1, 1.0f, stream));
  DW_ASSIGN_OR_RETURN(EventTimer timer, EventTimer::create());
  std::vector<double> ms;
  for (int64_t i = 0; i < repeats + 3; ++i) {
    DW_TRY(timer.start(stream));
    DW_CUDA_TRY(cudaMemcpyAsync(target.data(), source.data(), kBytes, cudaMemcpyDeviceToDevice, stream));
    DW_ASSIGN_OR_RETURN(const double elapsed, timer.stop(stream));
    if (i >= 3) ms.push_back(elapsed);
  }
  return 2.0 * static_cast<double>(kBytes) / (median(ms) * 1e-3);
}

// bf16 × bf16 → bf16 product of 8192³ on random data, FLOP per second.
Expected<double> gemm_rate(cudaStream_t stream, int64_t repeats) {
  constexpr int64_t n = 8192;
  DW_ASSIGN_OR_RETURN(cuda::Gemm gemm, cuda::Gemm::create());
  std::vector<cuda::DeviceBuffer> buffers;
  for (int i = 0; i < 3; ++i) {
    DW_ASSIGN_OR_RETURN(cuda::DeviceBuffer buffer,
                        cuda::DeviceBuffer::allocate(static_cast<size_t>(n * n) * 2, "the GEMM benchmark"));
    DW_CUDA_TRY(cuda::fill_uniform_bf16(buffer.as<cuda::bf16>(), n * n, 10 + i, 1.0f, stream));
    buffers.push_back(std::move(buffer));
  }
  DW_ASSIGN_OR_RETURN(EventTimer timer, EventTimer::create());
  std::vector<double> ms;
  for (int64_t i = 0; i < repeats + 3; ++i) {
    DW_TRY(timer.start(stream));
    DW_TRY(gemm.matmul(buffers[0].as<cuda::bf16>(), buffers[1].as<cuda::bf16>(), buffers[2].data(), false, n, n, n,
                       stream));
    DW_ASSIGN_OR_RETURN(const double elapsed, timer.stop(stream));
    if (i >= 3) ms.push_back(elapsed);
  }
  return 2.0 * static_cast<double>(n) * n * n / (median(ms) * 1e-3);
}

// Bytes of weights one decode step reads: every matrix once (the LM head included), norms;
// the embedding table only when it is also the LM head (a lookup reads a few rows).
double weight_bytes_per_step(const ModelConfig& config) {
  double bytes = 0.0;
  for (const DecoderTensorSpec& spec : decoder_tensor_specs(config)) {
    double count = 1.0;
    for (const int64_t extent : spec.shape) count *= static_cast<double>(extent);
    if (spec.name == "model.embed_tokens.weight") {
      if (config.tie_word_embeddings) bytes += 2.0 * count;
    } else if (spec.name.ends_with("norm.weight")) {
      bytes += 4.0 * count;
    } else {
      bytes += 2.0 * count;
    }
  }
  return bytes;
}

// Key/value bytes one sequence's step reads at `length` cached positions.
double cache_bytes_per_step(const ModelConfig& config, double length) {
  return length * static_cast<double>(config.num_layers) * 2.0 *
         static_cast<double>(config.num_kv_heads * config.head_dim) * 2.0;
}

std::vector<int32_t> random_tokens(Rng& rng, int64_t count, int64_t vocab) {
  std::vector<int32_t> tokens(static_cast<size_t>(count));
  for (int32_t& token : tokens) token = static_cast<int32_t>(rng.below(static_cast<uint64_t>(vocab)));
  return tokens;
}

// Appends `count` random tokens to `sequence`, in forward calls of at most 2048 tokens.
Status fill_sequence(CudaDecoder& decoder, SequenceId sequence, int64_t count, Rng& rng) {
  const std::vector<int32_t> last = {0};
  std::vector<int32_t> ignored;
  for (int64_t done = 0; done < count;) {
    const int64_t chunk = std::min<int64_t>(2048, count - done);
    const std::vector<int32_t> tokens = random_tokens(rng, chunk, decoder.config().vocab_size);
    const std::vector<int32_t> row = {static_cast<int32_t>(chunk - 1)};
    DW_TRY(decoder.forward_greedy(std::vector<ForwardRequest>{{sequence, tokens, row}}, ignored));
    done += chunk;
  }
  return {};
}

// Median milliseconds of one greedy decode step of the first `batch` sequences, each
// feeding back its own token, `steps` steps a repeat; every repeat starts at `context`.
Expected<double> time_decode(CudaDecoder& decoder, const std::vector<SequenceId>& sequences, int64_t batch,
                             int64_t context, const Settings& settings) {
  DW_ASSIGN_OR_RETURN(EventTimer timer, EventTimer::create());
  std::vector<int32_t> tokens(static_cast<size_t>(batch), 1);
  const std::vector<int32_t> first = {0};
  std::vector<std::vector<int32_t>> inputs(static_cast<size_t>(batch));
  std::vector<double> ms;
  // The first pass is the warm-up: it captures the graphs of every shape the steps meet.
  for (int64_t repeat = 0; repeat <= settings.repeats; ++repeat) {
    DW_TRY(timer.start(decoder.stream()));
    for (int64_t step = 0; step < settings.steps; ++step) {
      std::vector<ForwardRequest> requests;
      for (int64_t s = 0; s < batch; ++s) {
        inputs[static_cast<size_t>(s)] = {tokens[static_cast<size_t>(s)]};
        requests.push_back({sequences[static_cast<size_t>(s)], inputs[static_cast<size_t>(s)], first});
      }
      DW_TRY(decoder.forward_greedy(requests, tokens));
    }
    DW_ASSIGN_OR_RETURN(const double elapsed, timer.stop(decoder.stream()));
    if (repeat > 0) ms.push_back(elapsed / static_cast<double>(settings.steps));
    for (int64_t s = 0; s < batch; ++s) DW_TRY(decoder.truncate_sequence(sequences[static_cast<size_t>(s)], context));
  }
  return median(ms);
}

Expected<nlohmann::json> measure_model(CudaDecoder& decoder, const std::string& name, const Settings& settings,
                                       double bandwidth, double gemm_flops) {
  const ModelConfig& config = decoder.config();
  const double weights = weight_bytes_per_step(config);
  nlohmann::json report = {{"name", name},
                           {"parameters", decoder_parameter_count(config)},
                           {"weight_bytes_per_step", weights},
                           {"decode", nlohmann::json::array()}};
  Rng rng(99);
  const int64_t most = *std::max_element(settings.batches.begin(), settings.batches.end());
  std::vector<SequenceId> sequences;
  for (int64_t s = 0; s < most; ++s) sequences.push_back(decoder.create_sequence());
  std::vector<int32_t> contexts = settings.contexts;
  std::sort(contexts.begin(), contexts.end());
  int64_t filled = 0;
  for (const int32_t context : contexts) {
    if (context + settings.steps > decoder.context_length()) {
      fmt::print(stderr, "{}: context {} + {} steps exceeds the model's {} positions; skipped\n", name, context,
                 settings.steps, decoder.context_length());
      continue;
    }
    for (const SequenceId sequence : sequences) DW_TRY(fill_sequence(decoder, sequence, context - filled, rng));
    filled = context;
    for (const int32_t batch : settings.batches) {
      DW_ASSIGN_OR_RETURN(const double step_ms, time_decode(decoder, sequences, batch, context, settings));
      const double average_length = static_cast<double>(context) + static_cast<double>(settings.steps) / 2.0;
      const double bytes = weights + static_cast<double>(batch) * cache_bytes_per_step(config, average_length);
      const double bound_ms = bytes / bandwidth * 1e3;
      report["decode"].push_back({{"batch", batch},
                                  {"context", context},
                                  {"step_ms", step_ms},
                                  {"tokens_per_second", static_cast<double>(batch) / (step_ms * 1e-3)},
                                  {"bytes_per_step", bytes},
                                  {"bandwidth_bound_ms", bound_ms},
                                  {"fraction_of_bandwidth_bound", bound_ms / step_ms}});
      fmt::print(stderr, "{}: decode batch {} context {}: {:.3f} ms/step, {:.1f} tokens/s, {:.1f}% of the bound\n",
                 name, batch, context, step_ms, batch / (step_ms * 1e-3), 100.0 * bound_ms / step_ms);
    }
  }
  for (const SequenceId sequence : sequences) decoder.release_sequence(sequence);

  if (settings.prefill > 0 && settings.prefill < decoder.context_length()) {
    DW_ASSIGN_OR_RETURN(EventTimer timer, EventTimer::create());
    const SequenceId sequence = decoder.create_sequence();
    const std::vector<int32_t> prompt = random_tokens(rng, settings.prefill, config.vocab_size);
    const std::vector<int32_t> last = {static_cast<int32_t>(settings.prefill - 1)};
    std::vector<int32_t> token;
    std::vector<double> ms;
    for (int64_t repeat = 0; repeat <= settings.repeats; ++repeat) {
      DW_TRY(timer.start(decoder.stream()));
      DW_TRY(decoder.forward_greedy(std::vector<ForwardRequest>{{sequence, prompt, last}}, token));
      DW_ASSIGN_OR_RETURN(const double elapsed, timer.stop(decoder.stream()));
      if (repeat > 0) ms.push_back(elapsed);
      DW_TRY(decoder.truncate_sequence(sequence, 0));
    }
    decoder.release_sequence(sequence);
    const double prefill_ms = median(ms);
    const double flops = prefill_flops(config, settings.prefill);
    const double rate = flops / (prefill_ms * 1e-3);
    report["prefill"] = {{"tokens", settings.prefill},
                         {"ms", prefill_ms},
                         {"tokens_per_second", static_cast<double>(settings.prefill) / (prefill_ms * 1e-3)},
                         {"flops", flops},
                         {"tflops", rate / 1e12},
                         {"fraction_of_gemm_rate", rate / gemm_flops}};
    fmt::print(stderr, "{}: prefill {}: {:.2f} ms, {:.0f} tokens/s, {:.1f} TFLOP/s, {:.1f}% of the GEMM rate\n", name,
               settings.prefill, prefill_ms, settings.prefill / (prefill_ms * 1e-3), rate / 1e12,
               100.0 * rate / gemm_flops);
  }
  return report;
}

std::string markdown_report(const nlohmann::json& report) {
  std::string text = fmt::format(
      "Device: {} ({} multiprocessors). Ceilings measured in this run: copy bandwidth {:.0f} GB/s "
      "(read + write), bf16 GEMM {:.0f} TFLOP/s (8192³, cuBLASLt). Decode: greedy steps, {} steps × {} "
      "repeats (median), CUDA graphs{}{}{}.\n",
      report["device"]["name"].get<std::string>(), report["device"]["multiprocessors"].get<int>(),
      report["ceilings"]["copy_bandwidth_bytes_per_second"].get<double>() / 1e9,
      report["ceilings"]["gemm_bf16_flops_per_second"].get<double>() / 1e12, report["settings"]["steps"].get<int>(),
      report["settings"]["repeats"].get<int>(),
      report["settings"]["programmatic_launch"].get<bool>() ? ", programmatic dependent launch" : "",
      report["settings"]["fused_small_steps"].get<bool>() ? ", fused small-step kernels" : "",
      report["settings"]["attention_cluster_merge"].get<bool>() ? ", attention slices merged in clusters" : "");
  for (const nlohmann::json& model : report["models"]) {
    text += fmt::format("\n### {}\n\n", model["name"].get<std::string>());
    if (model.contains("error")) {
      text += fmt::format("failed: {}\n", model["error"].get<std::string>());
      continue;
    }
    text += fmt::format("{:.2f} B parameters, {:.2f} GB of weights read per decode step.\n\n",
                        model["parameters"].get<double>() / 1e9, model["weight_bytes_per_step"].get<double>() / 1e9);
    text += "| batch | context | ms / step | tokens/s | GB read / step | bound ms | of bandwidth bound |\n";
    text += "|---:|---:|---:|---:|---:|---:|---:|\n";
    for (const nlohmann::json& row : model["decode"]) {
      text += fmt::format("| {} | {} | {:.3f} | {:.0f} | {:.3f} | {:.3f} | {:.1f}% |\n", row["batch"].get<int>(),
                          row["context"].get<int>(), row["step_ms"].get<double>(),
                          row["tokens_per_second"].get<double>(), row["bytes_per_step"].get<double>() / 1e9,
                          row["bandwidth_bound_ms"].get<double>(),
                          100.0 * row["fraction_of_bandwidth_bound"].get<double>());
    }
    if (model.contains("prefill")) {
      const nlohmann::json& p = model["prefill"];
      text += fmt::format(
          "\nPrefill of {} tokens: {:.2f} ms, {:.0f} tokens/s, {:.1f} TFLOP/s = {:.1f}% of the measured GEMM "
          "rate.\n",
          p["tokens"].get<int64_t>(), p["ms"].get<double>(), p["tokens_per_second"].get<double>(),
          p["tflops"].get<double>(), 100.0 * p["fraction_of_gemm_rate"].get<double>());
    }
  }
  return text;
}

Status write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  if (!out) return make_error("cannot write '{}'", path);
  out << text;
  if (!out.flush()) return make_error("writing '{}' failed", path);
  return {};
}

// "1,8,32": positive integers up to `most`.
Expected<std::vector<int32_t>> parse_sizes(std::string_view name, std::string_view text, int64_t most) {
  std::vector<int32_t> sizes;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    DW_ASSIGN_OR_RETURN(const int64_t value, parse_integer_option(name, text.substr(start, comma - start)));
    if (value < 1 || value > most) return make_error("{}: {} is outside [1, {}]", name, value, most);
    sizes.push_back(static_cast<int32_t>(value));
    start = comma + 1;
  }
  return sizes;
}

Expected<Settings> parse_settings(const PerfArgs& args) {
  if (args.models.empty() && args.random_weights.empty()) {
    return make_error("give at least one --model PATH or --random-weights CONFIG.json");
  }
  Settings settings;
  DW_ASSIGN_OR_RETURN(const DeviceOption device, parse_device_option(args.device));
  if (!device.cuda) return make_error("perf measures the CUDA backend: give --device cuda[:N]");
  settings.device = device.index;
  DW_ASSIGN_OR_RETURN(settings.batches, parse_sizes("--batches", args.batches, 1024));
  DW_ASSIGN_OR_RETURN(settings.contexts, parse_sizes("--contexts", args.contexts, 1 << 24));
  DW_ASSIGN_OR_RETURN(settings.prefill, parse_integer_option("--prefill", args.prefill));
  DW_ASSIGN_OR_RETURN(settings.steps, parse_integer_option("--steps", args.steps));
  DW_ASSIGN_OR_RETURN(settings.repeats, parse_integer_option("--repeats", args.repeats));
  if (settings.prefill < 0) return make_error("--prefill must be 0 (none) or positive, got {}", settings.prefill);
  if (settings.steps < 1 || settings.repeats < 1) return make_error("--steps and --repeats must be positive");
  settings.fused = !args.no_fused;
  return settings;
}

}  // namespace

int run_perf(const std::vector<std::string>& cli) {
  PerfArgs args;
  ArgParser parser("perf",
                   "decode and prefill speed on a GPU, as fractions of the GPU's copy bandwidth and GEMM rate "
                   "measured in the same run");
  parser.add_list_option("model", &args.models, "PATH", "a GGUF file or Hugging Face folder (repeatable)");
  parser.add_list_option("random-weights", &args.random_weights, "CONFIG.json",
                         "random weights in this config's shape, drawn on the GPU (repeatable)");
  parser.add_option("device", &args.device, "cuda[:N]", "the GPU (default cuda)");
  parser.add_option("batches", &args.batches, "1,8,32", "decode batch sizes (default 1,8,32)");
  parser.add_option("contexts", &args.contexts, "512,4096", "cached positions before the decode steps (default 512,4096)");
  parser.add_option("prefill", &args.prefill, "N", "prefill length; 0 skips it (default 2048)");
  parser.add_option("steps", &args.steps, "N", "decode steps per timed repeat (default 32)");
  parser.add_option("repeats", &args.repeats, "N", "timed repeats, after one warm-up; the median is reported (default 5)");
  parser.add_option("json", &args.json_path, "FILE", "also write the report as JSON to FILE");
  parser.add_option("markdown", &args.markdown_path, "FILE", "also write the report as Markdown to FILE");
  parser.add_flag("no-programmatic-launch", &args.no_programmatic_launch,
                  "launch kernels without programmatic dependent launch");
  parser.add_flag("no-fused", &args.no_fused, "decode through norm kernels and cuBLASLt instead of the gemv kernels");
  parser.add_flag("no-cluster-merge", &args.no_cluster_merge,
                  "merge split attention through a global workspace instead of thread-block clusters");
  if (const std::optional<int> exit_code = parser.parse_or_exit_code(cli)) return *exit_code;
  const auto fail = [](const Error& error) {
    print_error("draftwise perf: " + error.message);
    return 1;
  };
  Expected<Settings> settings = parse_settings(args);
  if (!settings.ok()) return fail(settings.error());
  cuda::set_programmatic_launch(!args.no_programmatic_launch);
  cuda::set_attention_cluster_merge(!args.no_cluster_merge);

  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || settings->device >= count) {
    cudaGetLastError();
    return fail(Error{fmt::format("cuda:{} is not a visible CUDA device ({} visible)", settings->device, count)});
  }
  cudaSetDevice(settings->device);
  cudaDeviceProp properties{};
  cudaGetDeviceProperties(&properties, settings->device);
  Expected<cuda::Stream> stream = cuda::Stream::create();
  if (!stream.ok()) return fail(stream.error());
  Expected<double> bandwidth = copy_bandwidth(stream->get(), settings->repeats * 4);
  if (!bandwidth.ok()) return fail(bandwidth.error());
  Expected<double> gemm = gemm_rate(stream->get(), settings->repeats * 2);
  if (!gemm.ok()) return fail(gemm.error());
  fmt::print(stderr, "{}: copy {:.0f} GB/s, bf16 GEMM {:.0f} TFLOP/s\n", properties.name, *bandwidth / 1e9,
             *gemm / 1e12);

  nlohmann::json report = {
      {"device", {{"name", properties.name},
                  {"index", settings->device},
                  {"multiprocessors", properties.multiProcessorCount},
                  {"memory_bytes", properties.totalGlobalMem}}},
      {"ceilings", {{"copy_bandwidth_bytes_per_second", *bandwidth}, {"gemm_bf16_flops_per_second", *gemm}}},
      {"settings", {{"batches", settings->batches},
                    {"contexts", settings->contexts},
                    {"prefill", settings->prefill},
                    {"steps", settings->steps},
                    {"repeats", settings->repeats},
                    {"programmatic_launch", !args.no_programmatic_launch},
                    {"attention_cluster_merge", !args.no_cluster_merge},
                    {"fused_small_steps", settings->fused}}},
      {"models", nlohmann::json::array()}};

  const int32_t longest = *std::max_element(settings->contexts.begin(), settings->contexts.end());
  // The context each model is loaded with: room for the longest run, no more (block-table
  // rows, and so each step's upload, are a full context long).
  const auto options_for = [&](const ModelConfig& config) {
    CudaDecoderOptions options;
    options.device = settings->device;
    options.kv_cache_memory_share = 0.8;
    options.fused_small_steps = settings->fused;
    options.context_length = std::min<int64_t>(config.max_position_embeddings,
                                               std::max<int64_t>(longest, settings->prefill) + settings->steps + 64);
    return options;
  };
  const auto run_one = [&](const std::string& name, auto make) {
    Expected<std::unique_ptr<CudaDecoder>> decoder = make();
    Expected<nlohmann::json> measured =
        decoder.ok() ? measure_model(**decoder, name, *settings, *bandwidth, *gemm) : Expected<nlohmann::json>(decoder.error());
    if (!measured.ok()) {
      fmt::print(stderr, "{}: {}\n", name, measured.error().message);
      report["models"].push_back({{"name", name}, {"error", measured.error().message}});
      return;
    }
    report["models"].push_back(*measured);
  };
  for (const std::string& path : args.models) {
    run_one(std::filesystem::path(path).filename().string(), [&]() -> Expected<std::unique_ptr<CudaDecoder>> {
      DW_ASSIGN_OR_RETURN(const Checkpoint checkpoint, Checkpoint::open(path));
      DW_ASSIGN_OR_RETURN(const ModelConfig config, load_model_config(checkpoint));
      return CudaDecoder::load(checkpoint, options_for(config));
    });
  }
  for (const std::string& path : args.random_weights) {
    run_one(std::filesystem::path(path).stem().string() + " shape, random weights",
            [&]() -> Expected<std::unique_ptr<CudaDecoder>> {
              DW_ASSIGN_OR_RETURN(const ModelConfig config, load_hf_config(path));
              return CudaDecoder::create_random(config, kRandomWeightSeed, options_for(config));
            });
  }

  const std::string markdown = markdown_report(report);
  fmt::print("{}", markdown);
  if (!args.json_path.empty()) {
    if (Status written = write_file(args.json_path, report.dump(2) + "\n"); !written.ok()) return fail(written.error());
  }
  if (!args.markdown_path.empty()) {
    if (Status written = write_file(args.markdown_path, markdown); !written.ok()) return fail(written.error());
  }
  return 0;
}

#endif

}  // namespace draftwise
