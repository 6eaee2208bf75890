#include "target/cuda_ttt_decoder.h"

#include <algorithm>

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

Status CudaTttDecoder::run_decode_step(float* state, int32_t token, int64_t position) {
  constexpr size_t kMaxGraphs = 512;
  DW_TRY(ensure_scratch(1));
  // A graph launched earlier in this pass may not have copied its token yet.
  DW_CUDA_TRY(cudaStreamSynchronize(stream_));
  *static_cast<int32_t*>(pinned_token_.data()) = token;
  const auto key = std::make_pair(static_cast<const float*>(state), position % ttt_.mini_batch_size);
  auto graph = graphs_.find(key);
  if (graph == graphs_.end()) {
    if (graphs_.size() >= kMaxGraphs) drop_graphs(nullptr);
    DW_CUDA_TRY(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    const Status captured = run_tokens(state, std::span(&token, 1), position, static_cast<int32_t*>(pinned_token_.data()));
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
  state_floats_ = per_layer * static_cast<size_t>(c.num_layers);
  std::vector<float> initial(state_floats_, 0.0f);
  for (size_t l = 0; l < model.layers().size(); ++l) {
    const TttModel::Layer& w = model.layers()[l];
    Layer layer;
    DW_ASSIGN_OR_RETURN(layer.seq_norm, upload_f32(w.seq_norm, "seq_norm", s));
    DW_ASSIGN_OR_RETURN(layer.ffn_norm, upload_f32(w.ffn_norm, "ffn_norm", s));
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
    float* base = initial.data() + l * per_layer;
    base = std::copy(w.w1.begin(), w.w1.end(), base);
    base = std::copy(w.b1.begin(), w.b1.end(), base);
    base = std::copy(w.w2.begin(), w.w2.end(), base);
    std::copy(w.b2.begin(), w.b2.end(), base);
  }
  DW_ASSIGN_OR_RETURN(initial_state_, cuda::upload(initial, "the initial TTT state", s));
  DW_CUDA_TRY(cudaStreamSynchronize(s));
  return {};
}

CudaTttDecoder::LayerState CudaTttDecoder::layer_state(float* state, size_t l) const {
  const int64_t C = ttt_.hidden_size, nh = ttt_.num_heads, f = ttt_.head_dim(), A = ttt_.inner_width();
  const int64_t second = ttt_.mlp_layers ? 1 : 0;
  const size_t window = static_cast<size_t>((ttt_.conv_kernel - 1) * C);
  float* at = state + l * (state_floats_ / layers_.size());
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

Status CudaTttDecoder::run_tokens(float* state, std::span<const int32_t> tokens, int64_t position,
                                  const int32_t* host_ids) {
  const TttConfig& c = ttt_;
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t C = c.hidden_size, nh = c.num_heads, f = c.head_dim(), b = c.mini_batch_size;
  const int64_t ffn = c.intermediate_size, P = proj_width_;
  const float eps = static_cast<float>(c.rms_norm_eps);
  cudaStream_t s = stream_;
  DW_TRY(ensure_scratch(n));
  DW_CUDA_TRY(cudaMemcpyAsync(ids_.data(), host_ids != nullptr ? host_ids : tokens.data(), tokens.size_bytes(),
                              cudaMemcpyHostToDevice, s));
  float* x = x_.as<float>();
  DW_CUDA_TRY(cuda::embedding_lookup(embedding_.as<bf16>(), ids_.as<int32_t>(), x, n, C, s));
  float* proj = proj_.as<float>();
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& layer = layers_[l];
    const LayerState st = layer_state(state, l);
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
    DW_TRY(run_tokens(sequence.state.as<float>(),
                      std::span<const int32_t>(sequence.tokens.data() + at, static_cast<size_t>(count)), at));
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
  if (length == current) return {};
  DW_CUDA_TRY(cudaSetDevice(options_.device));
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

Status CudaTttDecoder::forward(std::span<const ForwardRequest> batch, std::vector<float>& logits) {
  DW_TRY(check_forward_batch(batch, context_length_, config_.vocab_size,
                             [this](SequenceId id) { return sequence_length(id); }));
  DW_CUDA_TRY(cudaSetDevice(options_.device));
  const int64_t C = ttt_.hidden_size, vocab = config_.vocab_size;
  int64_t wanted = 0;
  for (const ForwardRequest& request : batch) wanted += static_cast<int64_t>(request.logit_rows.size());
  if (wanted > logit_capacity_) {
    DW_TRY(grow(rows_, static_cast<size_t>(wanted * C) * sizeof(bf16), "TTT logit rows"));
    DW_TRY(grow(logits_, static_cast<size_t>(wanted * vocab) * sizeof(float), "TTT logits"));
    logit_capacity_ = wanted;
  }
  for (const ForwardRequest& request : batch) {
    if (sequences_.at(request.sequence).state.data() == nullptr) {
      return make_error("sequence {}: its TTT state could not be allocated on the GPU", request.sequence);
    }
  }
  // Every copy buffer first: past this point a failure undoes the pass.
  for (const ForwardRequest& request : batch) {
    Sequence& sequence = sequences_.at(request.sequence);
    if (sequence.saved.data() == nullptr) {
      DW_ASSIGN_OR_RETURN(sequence.saved, DeviceBuffer::allocate(state_bytes(), "a TTT state copy"));
    }
  }
  std::vector<Sequence*> reached;
  const Status ran = run_pass(batch, logits, reached);
  if (!ran.ok()) {
    // Each reached sequence's copy is its state before this pass.
    for (Sequence* sequence : reached) {
      cudaMemcpyAsync(sequence->state.data(), sequence->saved.data(), state_bytes(), cudaMemcpyDeviceToDevice, stream_);
      sequence->tokens.resize(static_cast<size_t>(sequence->saved_length));
    }
    cudaStreamSynchronize(stream_);
  }
  return ran;
}

Status CudaTttDecoder::run_pass(std::span<const ForwardRequest> batch, std::vector<float>& logits,
                                std::vector<Sequence*>& reached) {
  const int64_t C = ttt_.hidden_size, vocab = config_.vocab_size;
  int64_t wanted = 0;
  for (const ForwardRequest& request : batch) wanted += static_cast<int64_t>(request.logit_rows.size());
  int64_t row = 0;
  for (const ForwardRequest& request : batch) {
    Sequence& sequence = sequences_.at(request.sequence);
    const int64_t length = static_cast<int64_t>(sequence.tokens.size());
    // The state before this pass, for rollback (and for undoing this pass on an error).
    DW_CUDA_TRY(cudaMemcpyAsync(sequence.saved.data(), sequence.state.data(), state_bytes(), cudaMemcpyDeviceToDevice,
                                stream_));
    sequence.has_saved = true;
    sequence.saved_length = length;
    reached.push_back(&sequence);
    const int64_t n = static_cast<int64_t>(request.tokens.size());
    for (int64_t at = 0; at < n; at += kChunkRows) {
      const int64_t count = std::min(kChunkRows, n - at);
      DW_TRY(n == 1 && options_.cuda_graphs
                 ? run_decode_step(sequence.state.as<float>(), request.tokens[0], length)
                 : run_tokens(sequence.state.as<float>(),
                              request.tokens.subspan(static_cast<size_t>(at), static_cast<size_t>(count)), length + at));
      // This chunk's requested rows, final-normed.
      for (size_t i = 0; i < request.logit_rows.size(); ++i) {
        const int64_t r = request.logit_rows[i];
        if (r < at || r >= at + count) continue;
        DW_CUDA_TRY(cudaMemcpyAsync(rows_.as<bf16>() + (row + static_cast<int64_t>(i)) * C,
                                    normed_.as<bf16>() + (r - at) * C, static_cast<size_t>(C) * sizeof(bf16),
                                    cudaMemcpyDeviceToDevice, stream_));
      }
    }
    sequence.tokens.insert(sequence.tokens.end(), request.tokens.begin(), request.tokens.end());
    row += static_cast<int64_t>(request.logit_rows.size());
  }
  logits.assign(static_cast<size_t>(wanted * vocab), 0.0f);
  if (wanted > 0) {
    const bf16* head = (lm_head_.data() != nullptr ? lm_head_ : embedding_).as<bf16>();
    DW_TRY(linear(rows_.as<bf16>(), head, logits_.data(), true, wanted, C, vocab));
    DW_CUDA_TRY(cudaMemcpyAsync(logits.data(), logits_.data(), logits.size() * sizeof(float), cudaMemcpyDeviceToHost,
                                stream_));
  }
  DW_CUDA_TRY(cudaStreamSynchronize(stream_));
  return {};
}

}  // namespace draftwise
