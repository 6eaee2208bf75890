#include "target/cuda_ttt_decoder.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/ttt.h"
#include "kernels/half.h"
#include "target/ttt_decoder.h"

namespace draftwise {

namespace {

using cuda::bf16;
using cuda::DeviceBuffer;

constexpr int64_t kChunkRows = 4096;  // rows per run of a long prompt
constexpr float kPostNormEps = 1e-6f;
constexpr int64_t kKvBlock = 16;  // attention cache positions per block

Expected<DeviceBuffer> upload_f32(std::span<const float> values, const std::string& what, cudaStream_t stream) {
  return cuda::upload(std::vector<float>(values.begin(), values.end()), what, stream);
}

// Row blocks stacked into one bf16 matrix.
Expected<DeviceBuffer> upload_bf16(const std::vector<std::span<const float>>& parts, const std::string& what,
                                   cudaStream_t stream) {
  std::vector<uint16_t> bits;
  for (const std::span<const float> part : parts) {
    for (const float value : part) bits.push_back(f32_to_bf16(value));
  }
  return cuda::upload(bits, what, stream);
}

Status grow(DeviceBuffer& buffer, size_t bytes, const char* what) {
  if (buffer.bytes() >= bytes) return {};
  DW_ASSIGN_OR_RETURN(buffer, DeviceBuffer::allocate(bytes, what));
  return {};
}

}  // namespace

CudaTttDecoder::CudaTttDecoder(const TttConfig& config, const CudaTttDecoderOptions& options)
    : ttt_(config),
      config_(model_config_of(config)),
      options_(options),
      context_length_(options.context_length > 0 ? options.context_length : config.max_position_embeddings) {}

CudaTttDecoder::~CudaTttDecoder() {
  if (stream_ != nullptr) {
    cudaSetDevice(options_.device);
    cudaStreamSynchronize(stream_);
    drop_graphs(nullptr);
    cudaStreamDestroy(stream_);
  }
}

void CudaTttDecoder::drop_graphs(const float* state) {
  for (auto it = graphs_.begin(); it != graphs_.end();) {
    if (state == nullptr || it->first.first == state) {
      cudaGraphExecDestroy(it->second);
      it = graphs_.erase(it);
    } else {
      ++it;
    }
  }
}

Status CudaTttDecoder::run_decode_step(Sequence& sequence, int32_t token, int64_t position) {
  const float* state = sequence.state.as<float>();
  constexpr size_t kMaxGraphs = 512;
  DW_TRY(ensure_scratch(1));
  // A graph launched earlier in this pass may not have copied its token yet.
  DW_CUDA_TRY(cudaStreamSynchronize(stream_));
  *static_cast<int32_t*>(pinned_token_.data()) = token;
  const auto key = std::make_pair(state, position % ttt_.mini_batch_size);
  auto graph = graphs_.find(key);
  if (graph == graphs_.end()) {
    if (graphs_.size() >= kMaxGraphs) drop_graphs(nullptr);
    DW_CUDA_TRY(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    const Status captured =
        run_tokens(sequence, std::span(&token, 1), position, static_cast<int32_t*>(pinned_token_.data()));
    cudaGraph_t recorded = nullptr;
    const cudaError_t ended = cudaStreamEndCapture(stream_, &recorded);
    if (!captured.ok() || ended != cudaSuccess) {
      if (recorded != nullptr) cudaGraphDestroy(recorded);
      DW_TRY(captured);
      return cuda_status(ended, "cudaStreamEndCapture");
    }
    cudaGraphExec_t exec = nullptr;
    const cudaError_t instantiated = cudaGraphInstantiate(&exec, recorded, 0);
    cudaGraphDestroy(recorded);
    DW_TRY(cuda_status(instantiated, "cudaGraphInstantiate"));
    graph = graphs_.emplace(key, exec).first;
  }
  return cuda_status(cudaGraphLaunch(graph->second, stream_), "cudaGraphLaunch");
}

std::string CudaTttDecoder::device_name() const { return fmt::format("cuda:{}", options_.device); }

Expected<std::unique_ptr<CudaTttDecoder>> CudaTttDecoder::create(const TttModel& model,
                                                                 const CudaTttDecoderOptions& options) {
  const TttConfig& c = model.config();
  if (c.mlp_layers ? !cuda::ttt_mlp_supported(c.head_dim(), c.mini_batch_size)
                   : !cuda::ttt_linear_supported(c.head_dim(), c.mini_batch_size)) {
    return make_error("the CUDA TTT-{} kernel does not fit head width {} with mini-batches of {} in shared memory",
                      c.mlp_layers ? "MLP" : "Linear", c.head_dim(), c.mini_batch_size);
  }
  if ((c.pre_conv || c.share_qk) && c.conv_kernel > 8) return make_error("conv_kernel {} is above 8 on CUDA", c.conv_kernel);
  if (c.hybrid() && c.head_dim() > 256) {
    return make_error("the attention layers' head width {} is above the CUDA attention kernels' 256", c.head_dim());
  }
  if (options.context_length < 0) return make_error("the context length must not be negative");
  std::unique_ptr<CudaTttDecoder> decoder(new CudaTttDecoder(c, options));
  DW_CUDA_TRY(cudaSetDevice(options.device));
  DW_CUDA_TRY(cudaStreamCreateWithFlags(&decoder->stream_, cudaStreamNonBlocking));
  DW_ASSIGN_OR_RETURN(decoder->pinned_token_, cuda::PinnedBuffer::allocate(sizeof(int32_t), "the decode token"));
  DW_ASSIGN_OR_RETURN(decoder->gemm_, cuda::Gemm::create());
  DW_TRY(decoder->upload(model));
  return decoder;
}

Status CudaTttDecoder::upload(const TttModel& model) {
  const TttConfig& c = ttt_;
  const int64_t C = c.hidden_size, nh = c.num_heads, f = c.head_dim();
  cudaStream_t s = stream_;
  DW_ASSIGN_OR_RETURN(embedding_, upload_bf16({model.embedding()}, "the embedding", s));
  if (!c.tie_word_embeddings) {
    DW_ASSIGN_OR_RETURN(lm_head_, upload_bf16({model.lm_head()}, "the LM head", s));
  }
  final_norm_host_.assign(model.final_norm().begin(), model.final_norm().end());
  DW_ASSIGN_OR_RETURN(final_norm_, upload_f32(model.final_norm(), "the final norm", s));
  // Projection rows: q, k, v, g, lr logits.
  int64_t rows = C;
  if (!c.share_qk) k_offset_ = std::exchange(rows, rows + C);
  v_offset_ = std::exchange(rows, rows + C);
  if (c.use_gate) g_offset_ = std::exchange(rows, rows + C);
  lr_offset_ = std::exchange(rows, rows + nh);
  proj_width_ = rows;
  const size_t window = static_cast<size_t>((c.conv_kernel - 1) * C);
  const int64_t A = c.inner_width();
  const size_t inner = static_cast<size_t>(nh * (f * A + A + (c.mlp_layers ? A * f + f : 0)));  // W1 b1 W2 b2
  const size_t per_layer = 2 * inner + 2 * window;
  // A sequence state holds the TTT layers' parts, one after another (at least one float).
  for (size_t l = 0; l < model.layers().size(); ++l) {
    state_offset_.push_back(state_floats_);
    if (!model.layers()[l].attention) state_floats_ += per_layer;
  }
  state_floats_ = std::max<size_t>(state_floats_, 1);
  std::vector<float> initial(state_floats_, 0.0f);
  for (size_t l = 0; l < model.layers().size(); ++l) {
    const TttModel::Layer& w = model.layers()[l];
    Layer layer;
    DW_ASSIGN_OR_RETURN(layer.seq_norm, upload_f32(w.seq_norm, "seq_norm", s));
    DW_ASSIGN_OR_RETURN(layer.ffn_norm, upload_f32(w.ffn_norm, "ffn_norm", s));
    if (w.attention) {
      layer.attention = true;
      layer.cache = static_cast<size_t>(attention_layers_++);
      DW_ASSIGN_OR_RETURN(layer.projections, upload_bf16({w.q_proj, w.k_proj, w.v_proj}, "the attention projections", s));
      DW_ASSIGN_OR_RETURN(layer.o_proj, upload_bf16({w.o_proj}, "o_proj", s));
      DW_ASSIGN_OR_RETURN(layer.gate_up, upload_bf16({w.gate_proj, w.up_proj}, "gate_up", s));
      DW_ASSIGN_OR_RETURN(layer.down, upload_bf16({w.down_proj}, "down_proj", s));
      layers_.push_back(std::move(layer));
      continue;
    }
    if (c.pre_conv) {
      DW_ASSIGN_OR_RETURN(layer.conv_norm, upload_f32(w.conv_norm, "conv.norm", s));
      DW_ASSIGN_OR_RETURN(layer.conv_weight, upload_f32(w.conv_weight, "conv.conv", s));
      DW_ASSIGN_OR_RETURN(layer.conv_bias, upload_f32(w.conv_bias, "conv.conv bias", s));
    }
    if (c.share_qk) {
      DW_ASSIGN_OR_RETURN(layer.conv_q_weight, upload_f32(w.conv_q_weight, "conv_q", s));
      DW_ASSIGN_OR_RETURN(layer.conv_q_bias, upload_f32(w.conv_q_bias, "conv_q bias", s));
      DW_ASSIGN_OR_RETURN(layer.conv_k_weight, upload_f32(w.conv_k_weight, "conv_k", s));
      DW_ASSIGN_OR_RETURN(layer.conv_k_bias, upload_f32(w.conv_k_bias, "conv_k bias", s));
    }
    std::vector<std::span<const float>> parts = {w.q_proj};
    if (!c.share_qk) parts.push_back(w.k_proj);
    parts.push_back(w.v_proj);
    if (c.use_gate) parts.push_back(w.g_proj);
    parts.push_back(w.lr_weight);
    DW_ASSIGN_OR_RETURN(layer.projections, upload_bf16(parts, "the TTT projections", s));
    DW_ASSIGN_OR_RETURN(layer.o_proj, upload_bf16({w.o_proj}, "o_proj", s));
    DW_ASSIGN_OR_RETURN(layer.gate_up, upload_bf16({w.gate_proj, w.up_proj}, "gate_up", s));
    DW_ASSIGN_OR_RETURN(layer.down, upload_bf16({w.down_proj}, "down_proj", s));
    DW_ASSIGN_OR_RETURN(layer.lr_bias, upload_f32(w.lr_bias, "learnable_ttt_lr_bias", s));
    DW_ASSIGN_OR_RETURN(layer.token_idx, upload_f32(w.token_idx, "learnable_token_idx", s));
    DW_ASSIGN_OR_RETURN(layer.ttt_norm_weight, upload_f32(w.ttt_norm_weight, "ttt_norm_weight", s));
    DW_ASSIGN_OR_RETURN(layer.ttt_norm_bias, upload_f32(w.ttt_norm_bias, "ttt_norm_bias", s));
    DW_ASSIGN_OR_RETURN(layer.post_norm_weight, upload_f32(w.post_norm_weight, "post_norm", s));
    DW_ASSIGN_OR_RETURN(layer.post_norm_bias, upload_f32(w.post_norm_bias, "post_norm bias", s));
    layers_.push_back(std::move(layer));
    // The learned initial inner weights; sums and windows zero.
    float* base = initial.data() + state_offset_[l];
    base = std::copy(w.w1.begin(), w.w1.end(), base);
    base = std::copy(w.b1.begin(), w.b1.end(), base);
    base = std::copy(w.w2.begin(), w.w2.end(), base);
    std::copy(w.b2.begin(), w.b2.end(), base);
  }
  DW_ASSIGN_OR_RETURN(initial_state_, cuda::upload(initial, "the initial TTT state", s));
  if (attention_layers_ > 0) {
    kv_dim_ = c.num_kv_heads * f;
    geometry_.num_heads = nh;
    geometry_.num_kv_heads = c.num_kv_heads;
    geometry_.head_dim = f;
    geometry_.block_size = kKvBlock;
    geometry_.max_blocks_per_sequence = (context_length_ + kKvBlock - 1) / kKvBlock;
    geometry_.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(f)));
    std::vector<int32_t> table(static_cast<size_t>(geometry_.max_blocks_per_sequence));
    for (size_t i = 0; i < table.size(); ++i) table[i] = static_cast<int32_t>(i);
    DW_ASSIGN_OR_RETURN(block_table_, cuda::upload(table, "the attention block table", s));
    DW_ASSIGN_OR_RETURN(inv_freq_, upload_f32(model.attention_inv_freq(), "the RoPE frequencies", s));
    int count = 0;
    DW_CUDA_TRY(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, options_.device));
    multiprocessors_ = count;
  }
  DW_CUDA_TRY(cudaStreamSynchronize(s));
  return {};
}

CudaTttDecoder::LayerState CudaTttDecoder::layer_state(float* state, size_t l) const {
  const int64_t C = ttt_.hidden_size, nh = ttt_.num_heads, f = ttt_.head_dim(), A = ttt_.inner_width();
  const int64_t second = ttt_.mlp_layers ? 1 : 0;
  const size_t window = static_cast<size_t>((ttt_.conv_kernel - 1) * C);
  float* at = state + state_offset_[l];
  const auto take = [&](int64_t count) { return std::exchange(at, at + count); };
  LayerState out;
  out.W1 = take(nh * f * A);
  out.b1 = take(nh * A);
  out.W2 = take(second * nh * A * f);
  out.b2 = take(second * nh * f);
  out.GW1 = take(nh * f * A);
  out.Gb1 = take(nh * A);
  out.GW2 = take(second * nh * A * f);
  out.Gb2 = take(second * nh * f);
  out.pre_window = take(static_cast<int64_t>(window));
  out.qk_window = take(static_cast<int64_t>(window));
  return out;
}

SequenceId CudaTttDecoder::create_sequence() {
  const SequenceId id = next_sequence_++;
  Sequence sequence;
  cudaSetDevice(options_.device);
  Expected<DeviceBuffer> state = DeviceBuffer::allocate(state_bytes(), "a TTT sequence state");
  if (state.ok()) {
    sequence.state = std::move(*state);
    cudaMemcpyAsync(sequence.state.data(), initial_state_.data(), state_bytes(), cudaMemcpyDeviceToDevice, stream_);
  }
  sequence.keys.resize(static_cast<size_t>(attention_layers_));
  sequence.values.resize(static_cast<size_t>(attention_layers_));
  sequences_.emplace(id, std::move(sequence));
  return id;
}

void CudaTttDecoder::release_sequence(SequenceId sequence) {
  cudaSetDevice(options_.device);
  cudaStreamSynchronize(stream_);
  const auto it = sequences_.find(sequence);
  if (it == sequences_.end()) return;
  drop_graphs(it->second.state.as<float>());
  sequences_.erase(it);
}

int64_t CudaTttDecoder::sequence_length(SequenceId sequence) const {
  const auto it = sequences_.find(sequence);
  return it == sequences_.end() ? -1 : static_cast<int64_t>(it->second.tokens.size());
}

CacheUsage CudaTttDecoder::cache_usage() const {
  CacheUsage usage;
  for (const auto& [id, sequence] : sequences_) {
    usage.used_blocks += (static_cast<int64_t>(sequence.tokens.size()) + usage.block_size - 1) / usage.block_size;
  }
  return usage;
}

Status CudaTttDecoder::ensure_scratch(int64_t rows) {
  if (rows <= scratch_rows_) return {};
  drop_graphs(nullptr);  // the buffers move
  const size_t n = static_cast<size_t>(rows), C = static_cast<size_t>(ttt_.hidden_size);
  const size_t ffn = static_cast<size_t>(ttt_.intermediate_size), nh = static_cast<size_t>(ttt_.num_heads);
  DW_TRY(grow(ids_, n * sizeof(int32_t), "TTT token ids"));
  DW_TRY(grow(x_, n * C * sizeof(float), "the TTT residual stream"));
  DW_TRY(grow(normed_f32_, n * C * sizeof(float), "TTT scratch"));
  DW_TRY(grow(normed_, n * C * sizeof(bf16), "TTT scratch"));
  DW_TRY(grow(proj_, n * static_cast<size_t>(proj_width_) * sizeof(float), "TTT projections"));
  DW_TRY(grow(qc_, n * C * sizeof(float), "TTT scratch"));
  DW_TRY(grow(kc_, n * C * sizeof(float), "TTT scratch"));
  DW_TRY(grow(q_, n * C * sizeof(float), "TTT scratch"));
  DW_TRY(grow(k_, n * C * sizeof(float), "TTT scratch"));
  DW_TRY(grow(v_, n * C * sizeof(float), "TTT scratch"));
  DW_TRY(grow(lr_, n * nh * sizeof(float), "TTT scratch"));
  DW_TRY(grow(heads_, n * C * sizeof(float), "TTT scratch"));
  DW_TRY(grow(post_, n * C * sizeof(bf16), "TTT scratch"));
  DW_TRY(grow(delta_, n * C * sizeof(bf16), "TTT scratch"));
  DW_TRY(grow(gate_up_, n * 2 * ffn * sizeof(bf16), "TTT scratch"));
  DW_TRY(grow(act_, n * ffn * sizeof(bf16), "TTT scratch"));
  if (attention_layers_ > 0) {
    DW_TRY(grow(qkv_, n * static_cast<size_t>(ttt_.hidden_size + 2 * kv_dim_) * sizeof(bf16), "attention q, k, v"));
    DW_TRY(grow(plan_positions_, n * sizeof(int32_t), "attention positions"));
  }
  scratch_rows_ = rows;
  return {};
}

Status CudaTttDecoder::linear(const bf16* x, const bf16* w, void* y, bool y_fp32, int64_t rows, int64_t in,
                              int64_t out) {
  if (!cuda::gemv_supported(rows, in)) return gemm_.matmul(x, w, y, y_fp32, rows, in, out, stream_);
  cuda::LinearSource source;
  source.x = x;
  return cuda_status(cuda::gemv(source, rows, w, nullptr, in, out, cuda::GemvEpilogue::kStore, y, y_fp32, stream_),
                     "gemv");
}

Status CudaTttDecoder::ensure_kv(Sequence& sequence, int64_t positions) {
  if (positions <= sequence.kv_capacity || attention_layers_ == 0) return {};
  const int64_t most = geometry_.max_blocks_per_sequence * kKvBlock;
  int64_t capacity = std::max({positions, 2 * sequence.kv_capacity, int64_t{256}});
  capacity = std::min(most, (capacity + kKvBlock - 1) / kKvBlock * kKvBlock);
  const size_t bytes = static_cast<size_t>(capacity * kv_dim_) * sizeof(bf16);
  const size_t kept = static_cast<size_t>(sequence.kv_capacity * kv_dim_) * sizeof(bf16);
  // Every new buffer first: a failure leaves the caches as they were.
  std::vector<DeviceBuffer> keys, values;
  for (size_t i = 0; i < static_cast<size_t>(attention_layers_); ++i) {
    DW_ASSIGN_OR_RETURN(DeviceBuffer k, DeviceBuffer::allocate(bytes, "an attention key cache"));
    DW_ASSIGN_OR_RETURN(DeviceBuffer v, DeviceBuffer::allocate(bytes, "an attention value cache"));
    if (kept > 0) {
      DW_CUDA_TRY(cudaMemcpyAsync(k.data(), sequence.keys[i].data(), kept, cudaMemcpyDeviceToDevice, stream_));
      DW_CUDA_TRY(cudaMemcpyAsync(v.data(), sequence.values[i].data(), kept, cudaMemcpyDeviceToDevice, stream_));
    }
    keys.push_back(std::move(k));
    values.push_back(std::move(v));
  }
  DW_CUDA_TRY(cudaStreamSynchronize(stream_));
  sequence.keys = std::move(keys);
  sequence.values = std::move(values);
  sequence.kv_capacity = capacity;
  return {};
}

Status CudaTttDecoder::attention_mixer(const Layer& layer, Sequence& sequence, size_t cache, int64_t n,
                                       int64_t item_count) {
  const TttConfig& c = ttt_;
  const int64_t width = c.hidden_size + 2 * kv_dim_;
  cudaStream_t s = stream_;
  bf16* qkv = qkv_.as<bf16>();
  DW_TRY(linear(normed_.as<bf16>(), layer.projections.as<bf16>(), qkv, false, n, c.hidden_size, width));
  // The cache is one run of blocks, so a position is its own slot.
  const int32_t* positions = plan_positions_.as<int32_t>();
  DW_CUDA_TRY(cuda::rope_and_write_kv(qkv, width, n, c.num_heads, c.num_kv_heads, c.head_dim(), positions,
                                      inv_freq_.as<float>(), 0, positions, sequence.keys[cache].as<bf16>(),
                                      sequence.values[cache].as<bf16>(), s));
  DW_CUDA_TRY(cuda::attention_paged(qkv, width, sequence.keys[cache].as<bf16>(), sequence.values[cache].as<bf16>(),
                                    block_table_.as<int32_t>(), plan_items_.as<cuda::AttentionWorkItem>(), item_count,
                                    plan_splits_, n, geometry_, partial_out_.as<float>(), partial_stats_.as<float>(),
                                    nullptr, post_.as<bf16>(), s));
  return {};
}

Status CudaTttDecoder::ttt_mixer(size_t l, float* state, int64_t n, int64_t position) {
  const TttConfig& c = ttt_;
  const Layer& layer = layers_[l];
  const LayerState st = layer_state(state, l);
  const int64_t C = c.hidden_size, nh = c.num_heads, f = c.head_dim(), b = c.mini_batch_size, P = proj_width_;
  const float eps = static_cast<float>(c.rms_norm_eps);
  cudaStream_t s = stream_;
  float* x = x_.as<float>();
  float* proj = proj_.as<float>();
    if (c.pre_conv) {
      DW_CUDA_TRY(cuda::ttt_rms_norm(x, layer.conv_norm.as<float>(), normed_f32_.as<float>(), n, C, eps, s));
      cuda::CausalConv conv;
      conv.weight0 = layer.conv_weight.as<float>();
      conv.bias0 = layer.conv_bias.as<float>();
      conv.out0 = x;
      conv.accumulate = true;
      DW_CUDA_TRY(cuda::ttt_causal_conv(normed_f32_.as<float>(), C, conv, st.pre_window, n, C, c.conv_kernel, s));
    }
    DW_CUDA_TRY(cuda::add_rms_norm(x, nullptr, layer.seq_norm.as<float>(), normed_.as<bf16>(), n, C, eps, s));
    DW_TRY(linear(normed_.as<bf16>(), layer.projections.as<bf16>(), proj, true, n, C, P));
    cuda::TttProjected in;
    if (c.share_qk) {
      cuda::CausalConv conv;
      conv.weight0 = layer.conv_q_weight.as<float>();
      conv.bias0 = layer.conv_q_bias.as<float>();
      conv.out0 = qc_.as<float>();
      conv.weight1 = layer.conv_k_weight.as<float>();
      conv.bias1 = layer.conv_k_bias.as<float>();
      conv.out1 = kc_.as<float>();
      DW_CUDA_TRY(cuda::ttt_causal_conv(proj, P, conv, st.qk_window, n, C, c.conv_kernel, s));
      in.q = qc_.as<float>();
      in.k = kc_.as<float>();
      in.qk_stride = C;
    } else {
      in.q = proj;
      in.k = proj + k_offset_;
      in.qk_stride = P;
    }
    in.v = proj + v_offset_;
    in.lr_logit = proj + lr_offset_;
    in.v_stride = P;
    DW_CUDA_TRY(cuda::ttt_prepare(in, layer.lr_bias.as<float>(), q_.as<float>(), k_.as<float>(), v_.as<float>(),
                                  lr_.as<float>(), n, nh, f, position % b, b, static_cast<float>(c.rope_theta),
                                  static_cast<float>(c.ttt_base_lr), s));
    if (c.mlp_layers) {
      DW_CUDA_TRY(cuda::ttt_mlp_steps(q_.as<float>(), k_.as<float>(), v_.as<float>(), lr_.as<float>(),
                                      layer.token_idx.as<float>(), layer.ttt_norm_weight.as<float>(),
                                      layer.ttt_norm_bias.as<float>(),
                                      {st.W1, st.b1, st.W2, st.b2, st.GW1, st.Gb1, st.GW2, st.Gb2}, heads_.as<float>(), n,
                                      nh, f, position % b, b, s));
    } else {
      DW_CUDA_TRY(cuda::ttt_linear_steps(q_.as<float>(), k_.as<float>(), v_.as<float>(), lr_.as<float>(),
                                         layer.token_idx.as<float>(), layer.ttt_norm_weight.as<float>(),
                                         layer.ttt_norm_bias.as<float>(), {st.W1, st.b1, st.GW1, st.Gb1},
                                         heads_.as<float>(), n, nh, f, position % b, b, s));
    }
    DW_CUDA_TRY(cuda::ttt_post_norm_gate(heads_.as<float>(), layer.post_norm_weight.as<float>(),
                                         layer.post_norm_bias.as<float>(), c.use_gate ? proj + g_offset_ : nullptr, P,
                                         post_.as<bf16>(), n, C, kPostNormEps, s));
  return {};
}

Status CudaTttDecoder::run_tokens(Sequence& sequence, std::span<const int32_t> tokens, int64_t position,
                                  const int32_t* host_ids) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  DW_TRY(ensure_scratch(n));
  DW_CUDA_TRY(cudaMemcpyAsync(ids_.data(), host_ids != nullptr ? host_ids : tokens.data(), tokens.size_bytes(),
                              cudaMemcpyHostToDevice, stream_));
  DW_CUDA_TRY(cuda::embedding_lookup(embedding_.as<bf16>(), ids_.as<int32_t>(), x_.as<float>(), n, ttt_.hidden_size,
                                     stream_));
  return run_layers(sequence, 0, layers_.size(), n, position);
}

Status CudaTttDecoder::run_layers(Sequence& sequence, size_t first, size_t end, int64_t n, int64_t position) {
  float* state = sequence.state.as<float>();
  const TttConfig& c = ttt_;
  const int64_t C = c.hidden_size, ffn = c.intermediate_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  cudaStream_t s = stream_;
  int64_t item_count = 0;
  if (std::any_of(layers_.begin() + static_cast<std::ptrdiff_t>(first), layers_.begin() + static_cast<std::ptrdiff_t>(end),
                  [](const Layer& layer) { return layer.attention; })) {
    // The attention layers' plan: positions (and slots) and work items.
    std::vector<int32_t> positions(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) positions[static_cast<size_t>(i)] = static_cast<int32_t>(position + i);
    // Few queries over a long context leave the GPU idle: split the keys (flash-decoding), about
    // two blocks per multiprocessor, each slice at least one tile of 64 positions.
    const int tile = cuda::attention_query_tile(geometry_);
    plan_splits_ = 1;
    if (n <= cuda::kAttentionQueryTile) {
      const int64_t blocks = (n + tile - 1) / tile * c.num_kv_heads;
      const int64_t for_occupancy = (2 * multiprocessors_ + blocks - 1) / blocks;
      plan_splits_ = static_cast<int>(std::clamp<int64_t>(std::min(for_occupancy, (position + n + 63) / 64), 1, 32));
    }
    const std::vector<cuda::AttentionWorkItem> items =
        cuda::plan_attention({static_cast<int32_t>(n)}, {static_cast<int32_t>(position)}, plan_splits_, tile);
    item_count = static_cast<int64_t>(items.size());
    const size_t slices = static_cast<size_t>(plan_splits_ * n);
    DW_TRY(grow(plan_items_, items.size() * sizeof(cuda::AttentionWorkItem), "attention work items"));
    DW_TRY(grow(partial_out_, slices * static_cast<size_t>(C) * sizeof(float), "attention partials"));
    DW_TRY(grow(partial_stats_, slices * static_cast<size_t>(c.num_heads) * 2 * sizeof(float), "attention statistics"));
    DW_CUDA_TRY(cudaMemcpyAsync(plan_positions_.data(), positions.data(), positions.size() * sizeof(int32_t),
                                cudaMemcpyHostToDevice, s));
    DW_CUDA_TRY(cudaMemcpyAsync(plan_items_.data(), items.data(), items.size() * sizeof(cuda::AttentionWorkItem),
                                cudaMemcpyHostToDevice, s));
  }
  float* x = x_.as<float>();
  for (size_t l = first; l < end; ++l) {
    const Layer& layer = layers_[l];
    if (layer.attention) {
      DW_CUDA_TRY(cuda::add_rms_norm(x, nullptr, layer.seq_norm.as<float>(), normed_.as<bf16>(), n, C, eps, s));
      DW_TRY(attention_mixer(layer, sequence, layer.cache, n, item_count));
    } else {
      DW_TRY(ttt_mixer(l, state, n, position));
    }
    DW_TRY(linear(post_.as<bf16>(), layer.o_proj.as<bf16>(), delta_.data(), false, n, C, C));
    DW_CUDA_TRY(cuda::add_rms_norm(x, delta_.as<bf16>(), layer.ffn_norm.as<float>(), normed_.as<bf16>(), n, C, eps, s));
    if (cuda::gemv_supported(n, C)) {
      cuda::LinearSource source;
      source.x = normed_.as<bf16>();
      DW_CUDA_TRY(cuda::gemv(source, n, layer.gate_up.as<bf16>(), nullptr, C, 2 * ffn, cuda::GemvEpilogue::kSwiglu,
                             act_.data(), false, s));
    } else {
      DW_TRY(gemm_.matmul(normed_.as<bf16>(), layer.gate_up.as<bf16>(), gate_up_.data(), false, n, C, 2 * ffn, s));
      DW_CUDA_TRY(cuda::swiglu(gate_up_.as<bf16>(), act_.as<bf16>(), n, ffn, s));
    }
    DW_TRY(linear(act_.as<bf16>(), layer.down.as<bf16>(), delta_.data(), false, n, ffn, C));
    // The residual add; the norm written here is the next layer's or the final one.
    const float* next_norm = l + 1 < layers_.size() ? layers_[l + 1].seq_norm.as<float>() : final_norm_.as<float>();
    DW_CUDA_TRY(cuda::add_rms_norm(x, delta_.as<bf16>(), next_norm, normed_.as<bf16>(), n, C, eps, s));
  }
  return {};
}

Status CudaTttDecoder::replay(Sequence& sequence, int64_t from, int64_t to) {
  for (int64_t at = from; at < to; at += kChunkRows) {
    const int64_t count = std::min(kChunkRows, to - at);
    DW_TRY(run_tokens(sequence, std::span<const int32_t>(sequence.tokens.data() + at, static_cast<size_t>(count)), at));
  }
  return {};
}

Status CudaTttDecoder::truncate_sequence(SequenceId id, int64_t length) {
  const auto it = sequences_.find(id);
  if (it == sequences_.end()) return make_error("unknown sequence {}", id);
  Sequence& sequence = it->second;
  const int64_t current = static_cast<int64_t>(sequence.tokens.size());
  if (length < 0 || length > current) {
    return make_error("sequence {}: cannot truncate to {} (it holds {} tokens)", id, length, current);
  }
  if (length == current && sequence.pending.empty()) return {};
  DW_CUDA_TRY(cudaSetDevice(options_.device));
  // Pending tokens went into the first layers' state: they go with the rest.
  sequence.pending.clear();
  sequence.pending_exit = 0;
  int64_t from = 0;
  const bool restore = sequence.has_saved && sequence.saved_length <= length;
  DW_CUDA_TRY(cudaMemcpyAsync(sequence.state.data(), restore ? sequence.saved.data() : initial_state_.data(),
                              state_bytes(), cudaMemcpyDeviceToDevice, stream_));
  if (restore) {
    from = sequence.saved_length;
  } else {
    sequence.has_saved = false;
  }
  if (const Status replayed = replay(sequence, from, length); !replayed.ok()) {
    // The state is the one after tokens[0, from): the sequence is cut there, and says so.
    sequence.tokens.resize(static_cast<size_t>(from));
    cudaStreamSynchronize(stream_);
    return make_error("sequence {}: rolling back to {} tokens failed ({}); it now holds {}", id, length,
                      replayed.error().message, from);
  }
  sequence.tokens.resize(static_cast<size_t>(length));
  DW_CUDA_TRY(cudaStreamSynchronize(stream_));
  return {};
}

int64_t CudaTttDecoder::pending_tokens(SequenceId sequence) const {
  const auto it = sequences_.find(sequence);
  return it == sequences_.end() ? -1 : static_cast<int64_t>(it->second.pending.size());
}

Status CudaTttDecoder::forward(std::span<const ForwardRequest> batch, std::vector<float>& logits) {
  return pass(batch, nullptr, logits);
}

Status CudaTttDecoder::forward_draft(std::span<const ForwardRequest> batch, const DraftHead& head,
                                     std::vector<float>& logits) {
  return pass(batch, &head, logits);
}

Status CudaTttDecoder::pass(std::span<const ForwardRequest> batch, const DraftHead* draft, std::vector<float>& logits) {
  DW_TRY(check_early_exit_batch(
      batch, draft, config_, context_length_, [this](SequenceId id) { return sequence_length(id); },
      [this](SequenceId id) {
        const Sequence& sequence = sequences_.at(id);
        return PendingTokens{sequence.pending, sequence.pending_exit};
      }));
  DW_CUDA_TRY(cudaSetDevice(options_.device));
  const int64_t C = ttt_.hidden_size, vocab = config_.vocab_size;
  int64_t wanted = 0;
  for (const ForwardRequest& request : batch) wanted += static_cast<int64_t>(request.logit_rows.size());
  if (wanted > logit_capacity_) {
    DW_TRY(grow(rows_, static_cast<size_t>(wanted * C) * sizeof(bf16), "TTT logit rows"));
    DW_TRY(grow(exit_rows_, static_cast<size_t>(wanted * C) * sizeof(float), "TTT exit rows"));
    DW_TRY(grow(exit_normed_, static_cast<size_t>(wanted * C) * sizeof(bf16), "TTT exit rows"));
    DW_TRY(grow(logits_, static_cast<size_t>(wanted * vocab) * sizeof(float), "TTT logits"));
    logit_capacity_ = wanted;
  }
  if (draft != nullptr && !draft->norm_gain.empty()) {
    DW_TRY(grow(draft_gain_, static_cast<size_t>(C) * sizeof(float), "the draft head's gain"));
    DW_CUDA_TRY(cudaMemcpyAsync(draft_gain_.data(), draft->norm_gain.data(), static_cast<size_t>(C) * sizeof(float),
                                cudaMemcpyHostToDevice, stream_));
  }
  for (const ForwardRequest& request : batch) {
    if (sequences_.at(request.sequence).state.data() == nullptr) {
      return make_error("sequence {}: its TTT state could not be allocated on the GPU", request.sequence);
    }
  }
  // Every copy buffer and cache first: past this point a failure undoes the pass.
  const bool early_exit = draft != nullptr && draft->exit_layer < ttt_.num_layers;
  for (const ForwardRequest& request : batch) {
    Sequence& sequence = sequences_.at(request.sequence);
    const int64_t pending = static_cast<int64_t>(sequence.pending.size());
    const int64_t n = static_cast<int64_t>(request.tokens.size());
    DW_TRY(ensure_kv(sequence, static_cast<int64_t>(sequence.tokens.size()) + pending + n));
    if (sequence.saved.data() == nullptr) {
      DW_ASSIGN_OR_RETURN(sequence.saved, DeviceBuffer::allocate(state_bytes(), "a TTT state copy"));
    }
    if (early_exit && pending + n > sequence.pending_capacity) {
      const int64_t capacity = std::max(pending + n, 2 * sequence.pending_capacity);
      DW_ASSIGN_OR_RETURN(DeviceBuffer rows, DeviceBuffer::allocate(static_cast<size_t>(capacity * C) * sizeof(float),
                                                                    "pending draft rows"));
      if (pending > 0) {
        DW_CUDA_TRY(cudaMemcpyAsync(rows.data(), sequence.pending_hidden.data(),
                                    static_cast<size_t>(pending * C) * sizeof(float), cudaMemcpyDeviceToDevice, stream_));
      }
      DW_CUDA_TRY(cudaStreamSynchronize(stream_));
      sequence.pending_hidden = std::move(rows);
      sequence.pending_capacity = capacity;
    }
  }
  std::vector<Sequence*> reached;
  const Status ran = run_pass(batch, draft, logits, reached);
  if (!ran.ok()) {
    // Each reached sequence's copy is its state before this pass (before the round, for one
    // that held pending draft tokens: it loses them).
    for (Sequence* sequence : reached) {
      cudaMemcpyAsync(sequence->state.data(), sequence->saved.data(), state_bytes(), cudaMemcpyDeviceToDevice, stream_);
      sequence->tokens.resize(static_cast<size_t>(sequence->saved_length));
      sequence->pending.clear();
      sequence->pending_exit = 0;
    }
    cudaStreamSynchronize(stream_);
  }
  return ran;
}

Status CudaTttDecoder::run_request(Sequence& sequence, const ForwardRequest& request, const DraftHead* draft,
                                   int64_t row) {
  const int64_t C = ttt_.hidden_size;
  const size_t layers = layers_.size();
  const int64_t length = static_cast<int64_t>(sequence.tokens.size());
  const int64_t pending = static_cast<int64_t>(sequence.pending.size());
  const int64_t n = static_cast<int64_t>(request.tokens.size());
  // Copies the requested rows among [at, at + count) of this run: final-normed for the target,
  // the residual rows for a draft head.
  const auto collect = [&](int64_t at, int64_t count) -> Status {
    for (size_t i = 0; i < request.logit_rows.size(); ++i) {
      const int64_t r = request.logit_rows[i];
      if (r < at || r >= at + count) continue;
      const int64_t to = row + static_cast<int64_t>(i);
      if (draft != nullptr) {
        DW_CUDA_TRY(cudaMemcpyAsync(exit_rows_.as<float>() + to * C, x_.as<float>() + (r - at) * C,
                                    static_cast<size_t>(C) * sizeof(float), cudaMemcpyDeviceToDevice, stream_));
      } else {
        DW_CUDA_TRY(cudaMemcpyAsync(rows_.as<bf16>() + to * C, normed_.as<bf16>() + (r - at) * C,
                                    static_cast<size_t>(C) * sizeof(bf16), cudaMemcpyDeviceToDevice, stream_));
      }
    }
    return {};
  };
  if (draft != nullptr && static_cast<size_t>(draft->exit_layer) < layers) {
    // Layers [0, exit) only: the tokens wait, pending, after the earlier pending ones.
    const size_t exit = static_cast<size_t>(draft->exit_layer);
    for (int64_t at = 0; at < n; at += kChunkRows) {
      const int64_t count = std::min(kChunkRows, n - at);
      DW_TRY(ensure_scratch(count));
      DW_CUDA_TRY(cudaMemcpyAsync(ids_.data(), request.tokens.data() + at, static_cast<size_t>(count) * sizeof(int32_t),
                                  cudaMemcpyHostToDevice, stream_));
      DW_CUDA_TRY(cuda::embedding_lookup(embedding_.as<bf16>(), ids_.as<int32_t>(), x_.as<float>(), count, C, stream_));
      DW_TRY(run_layers(sequence, 0, exit, count, length + pending + at));
      DW_CUDA_TRY(cudaMemcpyAsync(sequence.pending_hidden.as<float>() + (pending + at) * C, x_.data(),
                                  static_cast<size_t>(count * C) * sizeof(float), cudaMemcpyDeviceToDevice, stream_));
      DW_TRY(collect(at, count));
    }
    sequence.pending_exit = draft->exit_layer;
    sequence.pending.insert(sequence.pending.end(), request.tokens.begin(), request.tokens.end());
    return {};
  }
  // Every layer; pending tokens (a verification pass begins with them) resume at their exit layer.
  const int64_t resumed = draft == nullptr ? pending : 0;
  for (int64_t at = 0; at < resumed; at += kChunkRows) {
    const int64_t count = std::min(kChunkRows, resumed - at);
    DW_TRY(ensure_scratch(count));
    DW_CUDA_TRY(cudaMemcpyAsync(x_.data(), sequence.pending_hidden.as<float>() + at * C,
                                static_cast<size_t>(count * C) * sizeof(float), cudaMemcpyDeviceToDevice, stream_));
    DW_TRY(run_layers(sequence, static_cast<size_t>(sequence.pending_exit), layers, count, length + at));
    DW_TRY(collect(at, count));
  }
  for (int64_t at = resumed; at < n; at += kChunkRows) {
    const int64_t count = std::min(kChunkRows, n - at);
    DW_TRY(count == 1 && options_.cuda_graphs && attention_layers_ == 0
               ? run_decode_step(sequence, request.tokens[static_cast<size_t>(at)], length + at)
               : run_tokens(sequence, request.tokens.subspan(static_cast<size_t>(at), static_cast<size_t>(count)),
                            length + at));
    DW_TRY(collect(at, count));
  }
  sequence.tokens.insert(sequence.tokens.end(), request.tokens.begin(), request.tokens.end());
  sequence.pending.clear();
  sequence.pending_exit = 0;
  return {};
}

Status CudaTttDecoder::run_pass(std::span<const ForwardRequest> batch, const DraftHead* draft,
                                std::vector<float>& logits, std::vector<Sequence*>& reached) {
  const int64_t C = ttt_.hidden_size, vocab = config_.vocab_size;
  int64_t wanted = 0;
  for (const ForwardRequest& request : batch) wanted += static_cast<int64_t>(request.logit_rows.size());
  int64_t row = 0;
  for (const ForwardRequest& request : batch) {
    Sequence& sequence = sequences_.at(request.sequence);
    // The state before this pass (a round's first), for rollback and for undoing it on an error.
    if (sequence.pending.empty()) {
      DW_CUDA_TRY(cudaMemcpyAsync(sequence.saved.data(), sequence.state.data(), state_bytes(), cudaMemcpyDeviceToDevice,
                                  stream_));
      sequence.has_saved = true;
      sequence.saved_length = static_cast<int64_t>(sequence.tokens.size());
    }
    reached.push_back(&sequence);
    DW_TRY(run_request(sequence, request, draft, row));
    row += static_cast<int64_t>(request.logit_rows.size());
  }
  logits.assign(static_cast<size_t>(wanted * vocab), 0.0f);
  if (wanted > 0) {
    const bf16* head = (lm_head_.data() != nullptr ? lm_head_ : embedding_).as<bf16>();
    if (draft == nullptr) {
      DW_TRY(linear(rows_.as<bf16>(), head, logits_.data(), true, wanted, C, vocab));
    } else {
      // The draft head: the LM head on the exit rows normed with the head's gain, then its adapter.
      const float* gain = draft->norm_gain.empty() ? final_norm_.as<float>() : draft_gain_.as<float>();
      const float eps = static_cast<float>(ttt_.rms_norm_eps);
      DW_CUDA_TRY(cuda::add_rms_norm_to(exit_rows_.as<float>(), nullptr, nullptr, gain, exit_normed_.as<bf16>(), wanted,
                                        C, eps, stream_));
      DW_TRY(linear(exit_normed_.as<bf16>(), head, logits_.data(), true, wanted, C, vocab));
      DW_TRY(adapter_.apply(*draft, exit_rows_.as<float>(), wanted, C, vocab, gain, eps, head, gemm_,
                            logits_.as<float>(), stream_));
    }
    DW_CUDA_TRY(cudaMemcpyAsync(logits.data(), logits_.data(), logits.size() * sizeof(float), cudaMemcpyDeviceToHost,
                                stream_));
  }
  DW_CUDA_TRY(cudaStreamSynchronize(stream_));
  return {};
}

}  // namespace draftwise
