#include "draft/dvi_adapter.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "kernels/random.h"
#include "target/safetensors_reader.h"

namespace draftwise {

namespace {

constexpr const char* kFormat = "draftwise-dvi-adapter-v1";
constexpr const char* kGain = "draft_head.norm.weight";
constexpr const char* kA = "draft_head.lora_A";
constexpr const char* kB = "draft_head.lora_B";
constexpr const char* kLens = "draft_head.lens";

Status check_shape(const DraftAdapterShape& shape) {
  if (shape.hidden <= 0 || shape.vocab <= 0) {
    return make_error("a draft adapter needs a positive hidden size and vocabulary, got {} and {}",
                      shape.hidden, shape.vocab);
  }
  if (shape.rank < 1 || shape.rank > DraftAdapterShape::kMaxRank) {
    return make_error("the adapter rank must be in [1, {}], got {}", DraftAdapterShape::kMaxRank,
                      shape.rank);
  }
  if (!std::isfinite(shape.alpha) || shape.alpha <= 0.0f) {
    return make_error("the adapter's alpha must be a positive number, got {}", shape.alpha);
  }
  return {};
}

}  // namespace

Expected<DraftAdapter> DraftAdapter::initial(const DraftAdapterShape& shape,
                                             std::span<const float> initial_gain, uint64_t seed) {
  DW_TRY(check_shape(shape));
  if (static_cast<int64_t>(initial_gain.size()) != shape.hidden) {
    return make_error("the initial norm gain has {} values, the hidden size is {}",
                      initial_gain.size(), shape.hidden);
  }
  DraftAdapter adapter;
  adapter.shape = shape;
  adapter.gain.assign(initial_gain.begin(), initial_gain.end());
  adapter.a.resize(static_cast<size_t>(shape.rank * shape.hidden));
  adapter.b.assign(static_cast<size_t>(shape.vocab * shape.rank), 0.0f);
  if (shape.lens) adapter.lens.assign(static_cast<size_t>(shape.hidden * shape.hidden), 0.0f);
  // Box–Muller, so that the values are the same on every platform.
  Rng rng(seed);
  const double deviation = 1.0 / std::sqrt(static_cast<double>(shape.hidden));
  for (float& value : adapter.a) {
    const double u = 1.0 - rng.uniform();  // (0, 1]
    value = static_cast<float>(deviation * std::sqrt(-2.0 * std::log(u)) *
                               std::cos(2.0 * M_PI * rng.uniform()));
  }
  return adapter;
}

uint64_t DraftAdapter::new_version() {
  static std::atomic<uint64_t> last_version{0};
  return ++last_version;
}

DraftAdapter DraftAdapter::with_new_version() const {
  DraftAdapter copy = *this;
  copy.version = new_version();
  return copy;
}

Status save_draft_adapter(const DraftAdapter& adapter, const std::filesystem::path& path) {
  DW_TRY(check_shape(adapter.shape));
  struct Tensor {
    const char* name;
    const std::vector<float>* values;
    std::vector<int64_t> shape;
  };
  std::vector<Tensor> tensors = {{kGain, &adapter.gain, {adapter.shape.hidden}},
                                 {kA, &adapter.a, {adapter.shape.rank, adapter.shape.hidden}},
                                 {kB, &adapter.b, {adapter.shape.vocab, adapter.shape.rank}}};
  if (adapter.shape.lens) {
    tensors.push_back({kLens, &adapter.lens, {adapter.shape.hidden, adapter.shape.hidden}});
  }
  nlohmann::json header;
  header["__metadata__"] = {{"format", kFormat},
                            {"alpha", fmt::format("{}", adapter.shape.alpha)},
                            {"rank", std::to_string(adapter.shape.rank)}};
  size_t offset = 0;
  for (const auto& tensor : tensors) {
    int64_t count = 1;
    for (const int64_t extent : tensor.shape) count *= extent;
    if (static_cast<int64_t>(tensor.values->size()) != count) {
      return make_error("{}: the adapter's {} has {} values, its shape needs {}", path.string(),
                        tensor.name, tensor.values->size(), count);
    }
    const size_t bytes = tensor.values->size() * sizeof(float);
    header[tensor.name] = {
        {"dtype", "F32"}, {"shape", tensor.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data starts 8-byte aligned
  const std::filesystem::path temporary = path.string() + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out) return make_error("cannot write {}: {}", temporary.string(), std::strerror(errno));
    const uint64_t length = text.size();
    unsigned char length_bytes[8];
    for (int i = 0; i < 8; ++i) length_bytes[i] = static_cast<unsigned char>(length >> (8 * i));
    out.write(reinterpret_cast<const char*>(length_bytes), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& tensor : tensors) {
      out.write(reinterpret_cast<const char*>(tensor.values->data()),
                static_cast<std::streamsize>(tensor.values->size() * sizeof(float)));
    }
    out.flush();
    if (!out) return make_error("writing {} failed: {}", temporary.string(), std::strerror(errno));
  }
  std::error_code error;
  std::filesystem::rename(temporary, path, error);
  if (error) {
    std::filesystem::remove(temporary, error);
    return make_error("cannot rename {} to {}: {}", temporary.string(), path.string(),
                      error.message());
  }
  return {};
}

Expected<DraftAdapter> load_draft_adapter(const std::filesystem::path& path, int64_t hidden,
                                          int64_t vocab) {
  DW_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::open(path.string()));
  const auto& metadata = file.metadata();
  const auto format = metadata.find("format");
  if (format == metadata.end() || format->second != kFormat) {
    return make_error("{}: not a draftwise draft-head adapter (its metadata has no format \"{}\")",
                      path.string(), kFormat);
  }
  DraftAdapter adapter;
  try {
    adapter.shape.alpha = std::stof(metadata.at("alpha"));
    adapter.shape.rank = std::stoll(metadata.at("rank"));
  } catch (const std::exception&) {
    return make_error("{}: the adapter's metadata needs numeric \"alpha\" and \"rank\"",
                      path.string());
  }
  adapter.shape.hidden = hidden;
  adapter.shape.vocab = vocab;
  if (Status checked = check_shape(adapter.shape); !checked.ok()) {
    return make_error("{}: {}", path.string(), checked.error().message);
  }
  // The lens is there or not by the file's tensors.
  adapter.shape.lens = std::any_of(file.tensors().begin(), file.tensors().end(),
                                   [](const SafetensorsTensor& tensor) { return tensor.name == kLens; });
  std::map<std::string, std::pair<std::vector<float>*, std::vector<int64_t>>> wanted = {
      {kGain, {&adapter.gain, {hidden}}},
      {kA, {&adapter.a, {adapter.shape.rank, hidden}}},
      {kB, {&adapter.b, {vocab, adapter.shape.rank}}}};
  if (adapter.shape.lens) wanted[kLens] = {&adapter.lens, {hidden, hidden}};
  if (file.tensors().size() != wanted.size()) {
    return make_error("{}: an adapter holds {} tensors, this file {}", path.string(), wanted.size(),
                      file.tensors().size());
  }
  for (const SafetensorsTensor& tensor : file.tensors()) {
    const auto it = wanted.find(tensor.name);
    if (it == wanted.end())
      return make_error("{}: unexpected tensor \"{}\"", path.string(), tensor.name);
    if (tensor.type != TensorType::f32)
      return make_error("{}: tensor {} is not F32", path.string(), tensor.name);
    if (tensor.shape != it->second.second) {
      return make_error("{}: tensor {} has shape [{}], this model needs [{}]", path.string(),
                        tensor.name, fmt::join(tensor.shape, ", "),
                        fmt::join(it->second.second, ", "));
    }
    std::vector<float>& values = *it->second.first;
    values.resize(tensor.data.size() / sizeof(float));
    std::memcpy(values.data(), tensor.data.data(), values.size() * sizeof(float));
    for (const float value : values) {
      if (!std::isfinite(value))
        return make_error("{}: tensor {} holds a non-finite value", path.string(), tensor.name);
    }
  }
  return adapter;
}

}  // namespace draftwise
