// qTTT on the GPU (QTTT.md): the span forward pass over one sequence's frozen paged cache, its
// backward pass into ΔW_Q, and the training loop; the same function as the CPU reference
// (target/cpu_decoder_qttt.cpp), in bf16 activations with fp32 accumulation, fp32 norms,
// residual stream, logits, gradients, ΔW_Q and Adam's moments.
//
// Forward, per layer l, rows x_l (fp32, saved): n1 = norm(x_l) (bf16, saved); q = n1 W_Qᵀ + b_Q
// + ΔW_Q n1 (the delta in fp32), rotated (bf16, saved); a = attention(q) over the cache (bf16,
// saved); m = x_l + a W_Oᵀ (fp32, saved); gate_up (bf16, saved); x_{l+1} = m + down(swiglu).
// Backward: the loss's logit gradient (bf16) through the LM head and final norm, then per layer
// the products' input gradients (cuBLASLt, dx = dy · W), SwiGLU and RMSNorm backward kernels,
// attention with respect to q (kernels/cuda/qttt.cu), RoPE's inverse, ΔW_Q's gradient in fp32.
#include <chrono>
#include <cmath>
#include <cstring>

#include "kernels/cuda/cuda_check.h"
#include "kernels/half.h"
#include "kernels/sha256.h"
#include "target/cuda_decoder.h"

namespace draftwise {

using cuda::bf16;
using cuda::DeviceBuffer;

class CudaQueryAdaptation final : public QueryAdaptation {
 public:
  CudaQueryAdaptation(int64_t rank, int64_t count, int device) : rank_(rank), count(count), device(device) {}
  int64_t rank() const override { return rank_; }
  int64_t bytes() const override {
    return static_cast<int64_t>(parameters.bytes() + first_moment.bytes() + second_moment.bytes());
  }

  int64_t rank_;
  int64_t count;  // parameters
  int device;
  DeviceBuffer parameters;                    // [count] fp32, target/qttt.h's layout
  DeviceBuffer first_moment, second_moment;   // [count] fp32, while training
};

cuda::QueryDeltaRow query_delta_row(const CudaQueryAdaptation& adaptation) {
  return cuda::QueryDeltaRow{adaptation.parameters.as<float>(), static_cast<int32_t>(adaptation.rank()), 0};
}

// The span pass's device buffers, grown as spans and models need.
struct CudaDecoder::QttBuffers {
  // Per layer [slab, …] with slab ≥ rows (span_pass): only the first rows are used.
  DeviceBuffer states;      // [L + 1, slab, hidden] fp32: each layer's input, then the final
  DeviceBuffer middles;     // [L, slab, hidden] fp32: after attention
  DeviceBuffer normed;      // [L + 1, slab, hidden] bf16: each layer's n1, then the final norm's
  DeviceBuffer queries;     // [L, slab, q_dim] bf16, after RoPE
  DeviceBuffer attended;    // [L, slab, q_dim] bf16
  DeviceBuffer gate_ups;    // [L, slab, 2·ffn] bf16
  DeviceBuffer post_normed;  // [rows, hidden] bf16
  DeviceBuffer projected;    // [rows, hidden] bf16
  DeviceBuffer activated;    // [rows, ffn] bf16
  DeviceBuffer delta;        // [rows, q_dim] fp32: ΔW_Q n1, then dq
  DeviceBuffer low;          // [rows, rank] fp32: A n1, then dq B
  DeviceBuffer normed_f32;   // [rows, hidden] fp32
  DeviceBuffer logits;       // [rows, vocab] fp32
  DeviceBuffer logit_grads;  // [rows, vocab] bf16
  DeviceBuffer row_losses;   // [rows] fp32
  DeviceBuffer ids;          // [rows + 1] int32: the span's tokens and the one after
  DeviceBuffer positions;    // [rows] int32
  DeviceBuffer table;        // [max blocks] int32: the sequence's block table
  DeviceBuffer items;        // attention work items
  DeviceBuffer d_normed;     // [rows, max(hidden, ffn, q_dim)] fp32
  DeviceBuffer dx;           // [rows, hidden] fp32
  DeviceBuffer dx_bf16;      // [rows, max(hidden, q_dim)] bf16
  DeviceBuffer d_gate_up;    // [rows, 2·ffn] bf16
  DeviceBuffer d_attended;   // [rows, q_dim] fp32
  DeviceBuffer gradient;     // [parameters] fp32 (query_loss's, when asked)
};

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

Status ensure(DeviceBuffer& buffer, size_t bytes, const char* what) {
  if (buffer.bytes() >= bytes) return {};
  buffer = DeviceBuffer();
  DW_ASSIGN_OR_RETURN(buffer, DeviceBuffer::allocate(bytes, what));
  return {};
}

constexpr int64_t kMaxGpuRank = 256;

}  // namespace

Status CudaDecoder::check_qtt_shape() const {
  DW_TRY(refuse_on_shard("qTTT"));
  if (config_.hidden_size > cuda::kMaxQttHidden || config_.head_dim > cuda::kMaxQttHeadDim) {
    return make_error("qttt on the GPU takes a hidden size up to {} and heads up to {} wide; this model has {} and {}",
                      cuda::kMaxQttHidden, cuda::kMaxQttHeadDim, config_.hidden_size, config_.head_dim);
  }
  return {};
}

Expected<CudaDecoder::Sequence*> CudaDecoder::qtt_sequence(SequenceId id, std::span<const int32_t> context,
                                                          int64_t& trainable) {
  DW_TRY(check_qtt_shape());
  const auto it = sequences_.find(id);
  if (it == sequences_.end()) return make_error("unknown sequence {}", id);
  DW_ASSIGN_OR_RETURN(trainable, qtt_trainable_positions(it->second.length, context, config_.vocab_size));
  return &it->second;
}

Expected<double> CudaDecoder::span_pass(const Sequence& sequence, const CudaQueryAdaptation* adaptation,
                                        std::span<const int32_t> context, int64_t first, int64_t count,
                                        float* gradient) {
  DW_CUDA_TRY(cudaSetDevice(options_.device));
  if (qtt_buffers_ == nullptr) qtt_buffers_ = std::make_shared<QttBuffers>();
  QttBuffers& q = *qtt_buffers_;
  const cudaStream_t stream = stream_.get();
  const int64_t layers = config_.num_layers;
  const int64_t hidden = config_.hidden_size;
  const int64_t head_dim = config_.head_dim;
  const int64_t heads = config_.num_heads;
  const int64_t q_dim = heads * head_dim;
  const int64_t ffn = config_.intermediate_size;
  const int64_t vocab = config_.vocab_size;
  const float eps = static_cast<float>(config_.rms_norm_eps);
  const int64_t rank = adaptation != nullptr ? adaptation->rank() : 0;
  const int64_t layer_parameters = qtt_layer_parameters(config_, rank);
  const auto n = [](int64_t a, int64_t b = 1, int64_t c = 1) { return static_cast<size_t>(a * b * c); };

  const int64_t widest = std::max({hidden, ffn, q_dim});
  // Per-layer slices start `slab` rows apart, a multiple of 128: every slice stays 256-byte
  // aligned, as cuBLASLt's products expect.
  const int64_t slab = (count + 127) / 128 * 128;
  DW_TRY(ensure(q.states, n(layers + 1, slab, hidden) * 4, "qTTT layer inputs"));
  DW_TRY(ensure(q.middles, n(layers, slab, hidden) * 4, "qTTT attention sums"));
  DW_TRY(ensure(q.normed, n(layers + 1, slab, hidden) * 2, "qTTT normed inputs"));
  DW_TRY(ensure(q.queries, n(layers, slab, q_dim) * 2, "qTTT queries"));
  DW_TRY(ensure(q.attended, n(layers, slab, q_dim) * 2, "qTTT attention outputs"));
  DW_TRY(ensure(q.gate_ups, n(layers, slab, 2 * ffn) * 2, "qTTT gate/up"));
  DW_TRY(ensure(q.post_normed, n(count, hidden) * 2, "qTTT normed"));
  DW_TRY(ensure(q.projected, n(count, hidden) * 2, "qTTT projections"));
  DW_TRY(ensure(q.activated, n(count, ffn) * 2, "qTTT activations"));
  DW_TRY(ensure(q.delta, n(count, q_dim) * 4, "qTTT query deltas"));
  DW_TRY(ensure(q.low, n(count, std::max<int64_t>(rank, 1)) * 4, "qTTT low-rank products"));
  DW_TRY(ensure(q.normed_f32, n(count, hidden) * 4, "qTTT normed inputs"));
  DW_TRY(ensure(q.logits, n(count, vocab) * 4, "qTTT logits"));
  DW_TRY(ensure(q.logit_grads, n(count, vocab) * 2, "qTTT logit gradients"));
  DW_TRY(ensure(q.row_losses, n(count) * 4, "qTTT losses"));
  DW_TRY(ensure(q.ids, n(count + 1) * 4, "qTTT tokens"));
  DW_TRY(ensure(q.positions, n(count) * 4, "qTTT positions"));
  DW_TRY(ensure(q.table, n(table_stride_) * 4, "qTTT block table"));
  if (gradient != nullptr) {
    DW_TRY(ensure(q.d_normed, n(count, widest) * 4, "qTTT gradients"));
    DW_TRY(ensure(q.dx, n(count, hidden) * 4, "qTTT gradients"));
    DW_TRY(ensure(q.dx_bf16, n(count, std::max(hidden, q_dim)) * 2, "qTTT gradients"));
    DW_TRY(ensure(q.d_gate_up, n(count, 2 * ffn) * 2, "qTTT gradients"));
    DW_TRY(ensure(q.d_attended, n(count, q_dim) * 4, "qTTT gradients"));
  }

  // The plan: tokens (and the targets after them), positions, block table, attention work.
  const std::span<const int32_t> span_ids = context.subspan(static_cast<size_t>(first), static_cast<size_t>(count) + 1);
  const std::vector<int32_t> ids(span_ids.begin(), span_ids.end());
  std::vector<int32_t> positions(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) positions[static_cast<size_t>(i)] = static_cast<int32_t>(first + i);
  std::vector<int32_t> table(static_cast<size_t>(table_stride_), 0);
  std::copy(sequence.blocks.begin(), sequence.blocks.end(), table.begin());
  const cuda::AttentionGeometry geometry = attention_geometry();
  const std::vector<cuda::AttentionWorkItem> items = cuda::plan_attention(
      {static_cast<int32_t>(count)}, {static_cast<int32_t>(first)}, 1, cuda::attention_query_tile(geometry));
  DW_TRY(ensure(q.items, items.size() * sizeof(cuda::AttentionWorkItem), "qTTT attention work"));
  DW_TRY(cuda::copy_to_device(q.ids.data(), ids.data(), ids.size() * 4, stream));
  DW_TRY(cuda::copy_to_device(q.positions.data(), positions.data(), positions.size() * 4, stream));
  DW_TRY(cuda::copy_to_device(q.table.data(), table.data(), table.size() * 4, stream));
  DW_TRY(cuda::copy_to_device(q.items.data(), items.data(), items.size() * sizeof(cuda::AttentionWorkItem), stream));

  const auto state = [&](int64_t l) { return q.states.as<float>() + n(l, slab, hidden); };
  const auto middle = [&](int64_t l) { return q.middles.as<float>() + n(l, slab, hidden); };
  const auto normed = [&](int64_t l) { return q.normed.as<bf16>() + n(l, slab, hidden); };
  const auto query = [&](int64_t l) { return q.queries.as<bf16>() + n(l, slab, q_dim); };
  const auto attended = [&](int64_t l) { return q.attended.as<bf16>() + n(l, slab, q_dim); };
  const auto gate_up = [&](int64_t l) { return q.gate_ups.as<bf16>() + n(l, slab, 2 * ffn); };
  const auto parameters_of = [&](int64_t l) { return adaptation->parameters.as<float>() + l * layer_parameters; };
  using Operand = cuda::Gemm::Operand;

  // Forward.
  DW_TRY(cuda_status(cuda::embedding_lookup(embedding_.as<bf16>(), q.ids.as<int32_t>(), state(0), count, hidden, stream),
                     "embedding_lookup"));
  DW_TRY(cuda_status(cuda::add_rms_norm_to(state(0), nullptr, nullptr, layers_[0].input_norm.as<float>(), normed(0),
                                           count, hidden, eps, stream),
                     "add_rms_norm_to"));
  for (int64_t l = 0; l < layers; ++l) {
    const Layer& layer = layers_[static_cast<size_t>(l)];
    // W_Q is the first q_dim rows of the stacked q, k, v weight (and bias).
    DW_TRY(gemm_.matmul(normed(l), layer.qkv_weight.as<bf16>(), query(l), false, count, hidden, q_dim, stream));
    if (layer.qkv_bias.data() != nullptr) {
      DW_TRY(cuda_status(cuda::add_bias(query(l), layer.qkv_bias.as<bf16>(), count, q_dim, stream), "add_bias"));
    }
    if (adaptation != nullptr) {
      DW_TRY(cuda_status(cuda::convert_bf16_to_f32(normed(l), q.normed_f32.as<float>(), count * hidden, stream),
                         "convert_bf16_to_f32"));
      if (rank == 0) {
        DW_TRY(gemm_.product(Operand{q.normed_f32.data(), false}, Operand{parameters_of(l), true}, true, q.delta.data(),
                             true, count, q_dim, hidden, 0.0f, stream));
      } else {
        DW_TRY(gemm_.product(Operand{q.normed_f32.data(), false}, Operand{parameters_of(l), true}, true, q.low.data(),
                             true, count, rank, hidden, 0.0f, stream));
        DW_TRY(gemm_.product(Operand{q.low.data(), false}, Operand{parameters_of(l) + rank * hidden, true}, true,
                             q.delta.data(), true, count, q_dim, rank, 0.0f, stream));
      }
      DW_TRY(cuda_status(cuda::add_f32_to_bf16(query(l), q_dim, q.delta.as<float>(), count, q_dim, stream),
                         "add_f32_to_bf16"));
    }
    DW_TRY(cuda_status(cuda::apply_rope(query(l), q_dim, count, heads, head_dim, q.positions.as<int32_t>(),
                                        inv_freq_.as<float>(), 0, stream),
                       "apply_rope"));
    DW_TRY(cuda_status(cuda::attention_paged(query(l), q_dim, layer.k_cache.as<bf16>(), layer.v_cache.as<bf16>(),
                                             q.table.as<int32_t>(), q.items.as<cuda::AttentionWorkItem>(),
                                             static_cast<int64_t>(items.size()), 1, count, geometry, nullptr, nullptr,
                                             nullptr, attended(l), stream),
                       "attention_paged"));
    DW_TRY(gemm_.matmul(attended(l), layer.o_weight.as<bf16>(), q.projected.data(), false, count, q_dim, hidden, stream));
    if (layer.o_bias.data() != nullptr) {
      DW_TRY(cuda_status(cuda::add_bias(q.projected.as<bf16>(), layer.o_bias.as<bf16>(), count, hidden, stream),
                         "add_bias"));
    }
    DW_TRY(cuda_status(cuda::add_rms_norm_to(state(l), q.projected.as<bf16>(), middle(l), layer.post_norm.as<float>(),
                                             q.post_normed.as<bf16>(), count, hidden, eps, stream),
                       "add_rms_norm_to"));
    DW_TRY(gemm_.matmul(q.post_normed.as<bf16>(), layer.gate_up.as<bf16>(), gate_up(l), false, count, hidden, 2 * ffn,
                        stream));
    DW_TRY(cuda_status(cuda::swiglu(gate_up(l), q.activated.as<bf16>(), count, ffn, stream), "swiglu"));
    DW_TRY(gemm_.matmul(q.activated.as<bf16>(), layer.down.as<bf16>(), q.projected.data(), false, count, ffn, hidden,
                        stream));
    // The next layer's input and its norm (the final norm after the last layer).
    const float* next_norm =
        l + 1 < layers ? layers_[static_cast<size_t>(l + 1)].input_norm.as<float>() : final_norm_.as<float>();
    DW_TRY(cuda_status(cuda::add_rms_norm_to(middle(l), q.projected.as<bf16>(), state(l + 1), next_norm, normed(l + 1),
                                             count, hidden, eps, stream),
                       "add_rms_norm_to"));
  }
  const DeviceBuffer& head = lm_head_.data() != nullptr ? lm_head_ : embedding_;
  DW_TRY(gemm_.matmul(normed(layers), head.as<bf16>(), q.logits.data(), true, count, hidden, vocab, stream));
  const float scale = 1.0f / static_cast<float>(count);
  DW_TRY(cuda_status(cuda::next_token_loss(q.logits.as<float>(), q.ids.as<int32_t>() + 1, count, vocab, scale,
                                           q.row_losses.as<float>(),
                                           gradient != nullptr ? q.logit_grads.as<bf16>() : nullptr, stream),
                     "next_token_loss"));
  std::vector<float> row_losses(static_cast<size_t>(count));
  DW_TRY(cuda::copy_to_host(row_losses.data(), q.row_losses.data(), row_losses.size() * 4, stream));
  double loss = 0;
  for (const float row_loss : row_losses) loss += row_loss;
  loss /= static_cast<double>(count);
  if (!std::isfinite(loss)) return make_error("qttt: the loss is not finite ({})", loss);
  if (gradient == nullptr) return loss;

  // Backward.
  float* dx = q.dx.as<float>();
  float* d_normed = q.d_normed.as<float>();
  bf16* dx_bf16 = q.dx_bf16.as<bf16>();
  float* dq = q.delta.as<float>();
  DW_TRY(gemm_.product(Operand{q.logit_grads.data(), false}, Operand{head.data(), false}, false, d_normed, true, count,
                       hidden, vocab, 0.0f, stream));
  DW_TRY(cuda_status(cuda::rms_norm_backward(state(layers), final_norm_.as<float>(), d_normed, dx, count, hidden, eps,
                                             false, stream),
                     "rms_norm_backward"));
  for (int64_t l = layers - 1; l >= 0; --l) {
    const Layer& layer = layers_[static_cast<size_t>(l)];
    // MLP: x_{l+1} = m + down(swiglu(gate_up(norm(m)))).
    DW_TRY(cuda_status(cuda::convert_f32_to_bf16(dx, dx_bf16, count * hidden, stream), "convert_f32_to_bf16"));
    DW_TRY(gemm_.product(Operand{dx_bf16, false}, Operand{layer.down.data(), false}, false, d_normed, true, count, ffn,
                         hidden, 0.0f, stream));
    DW_TRY(cuda_status(cuda::swiglu_backward(gate_up(l), d_normed, q.d_gate_up.as<bf16>(), count, ffn, stream),
                       "swiglu_backward"));
    DW_TRY(gemm_.product(Operand{q.d_gate_up.data(), false}, Operand{layer.gate_up.data(), false}, false, d_normed,
                         true, count, hidden, 2 * ffn, 0.0f, stream));
    DW_TRY(cuda_status(cuda::rms_norm_backward(middle(l), layer.post_norm.as<float>(), d_normed, dx, count, hidden, eps,
                                               true, stream),
                       "rms_norm_backward"));
    // Attention: m = x + o(attention(q)); only q carries a gradient.
    DW_TRY(cuda_status(cuda::convert_f32_to_bf16(dx, dx_bf16, count * hidden, stream), "convert_f32_to_bf16"));
    DW_TRY(gemm_.product(Operand{dx_bf16, false}, Operand{layer.o_weight.data(), false}, false, q.d_attended.data(),
                         true, count, q_dim, hidden, 0.0f, stream));
    DW_TRY(cuda_status(cuda::attention_query_backward(query(l), attended(l), q.d_attended.as<float>(),
                                                      layer.k_cache.as<bf16>(), layer.v_cache.as<bf16>(),
                                                      q.table.as<int32_t>(), count, first, geometry, dq, stream),
                       "attention_query_backward"));
    DW_TRY(cuda_status(cuda::rotate_rows_f32(dq, count, heads, head_dim, first, inv_freq_.as<float>(), -1.0f, stream),
                       "rotate_rows_f32"));
    DW_TRY(cuda_status(cuda::convert_bf16_to_f32(normed(l), q.normed_f32.as<float>(), count * hidden, stream),
                       "convert_bf16_to_f32"));
    float* layer_gradient = gradient + l * layer_parameters;
    if (rank == 0) {
      DW_TRY(gemm_.product(Operand{dq, true}, Operand{q.normed_f32.data(), false}, true, layer_gradient, true, q_dim,
                           hidden, count, 0.0f, stream));
    } else {
      // ΔW_Q = B A: dB = dqᵀ (n Aᵀ), dA = (dq B)ᵀ n.
      const float* a = parameters_of(l);
      const float* b = a + rank * hidden;
      DW_TRY(gemm_.product(Operand{q.normed_f32.data(), false}, Operand{a, true}, true, q.low.data(), true, count,
                           rank, hidden, 0.0f, stream));
      DW_TRY(gemm_.product(Operand{dq, true}, Operand{q.low.data(), false}, true, layer_gradient + rank * hidden, true,
                           q_dim, rank, count, 0.0f, stream));
      DW_TRY(gemm_.product(Operand{dq, false}, Operand{b, false}, true, q.low.data(), true, count, rank, q_dim, 0.0f,
                           stream));
      DW_TRY(gemm_.product(Operand{q.low.data(), true}, Operand{q.normed_f32.data(), false}, true, layer_gradient,
                           true, rank, hidden, count, 0.0f, stream));
    }
    if (l == 0) break;  // nothing trainable below the first layer's queries
    // n1's gradient through W_Q + ΔW_Q, then the input norm, into x.
    DW_TRY(cuda_status(cuda::convert_f32_to_bf16(dq, dx_bf16, count * q_dim, stream), "convert_f32_to_bf16"));
    DW_TRY(gemm_.product(Operand{dx_bf16, false}, Operand{layer.qkv_weight.data(), false}, false, d_normed, true, count,
                         hidden, q_dim, 0.0f, stream));
    if (adaptation != nullptr && rank == 0) {
      DW_TRY(gemm_.product(Operand{dq, false}, Operand{parameters_of(l), false}, true, d_normed, true, count, hidden,
                           q_dim, 1.0f, stream));
    } else if (adaptation != nullptr) {
      DW_TRY(gemm_.product(Operand{q.low.data(), false}, Operand{parameters_of(l), false}, true, d_normed, true, count,
                           hidden, rank, 1.0f, stream));
    }
    DW_TRY(cuda_status(cuda::rms_norm_backward(state(l), layer.input_norm.as<float>(), d_normed, dx, count, hidden,
                                               eps, true, stream),
                       "rms_norm_backward"));
  }
  return loss;
}

Expected<double> CudaDecoder::query_loss(SequenceId id, std::span<const int32_t> context, int64_t first, int64_t count,
                                         std::vector<float>* gradient) {
  int64_t trainable = 0;
  DW_ASSIGN_OR_RETURN(Sequence * sequence, qtt_sequence(id, context, trainable));
  DW_TRY(check_qtt_positions(first, count, trainable));
  const CudaQueryAdaptation* adaptation = sequence->adaptation.get();
  if (gradient == nullptr) return span_pass(*sequence, adaptation, context, first, count, nullptr);
  if (adaptation == nullptr) return make_error("qttt: sequence {} holds no adaptation to take a gradient for", id);
  DW_CUDA_TRY(cudaSetDevice(options_.device));
  if (qtt_buffers_ == nullptr) qtt_buffers_ = std::make_shared<QttBuffers>();
  DW_TRY(ensure(qtt_buffers_->gradient, static_cast<size_t>(adaptation->count) * 4, "the qTTT gradient"));
  DW_ASSIGN_OR_RETURN(const double loss,
                      span_pass(*sequence, adaptation, context, first, count, qtt_buffers_->gradient.as<float>()));
  gradient->resize(static_cast<size_t>(adaptation->count));
  DW_TRY(cuda::copy_to_host(gradient->data(), qtt_buffers_->gradient.data(), gradient->size() * 4, stream_.get()));
  return loss;
}

Expected<QttReport> CudaDecoder::adapt_queries(SequenceId id, std::span<const int32_t> context,
                                               const QttOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  DW_TRY(check_qtt_options(options, config_));
  if (options.rank > kMaxGpuRank) {
    return make_error("qttt: 'rank' must be at most {} on the GPU, got {}", kMaxGpuRank, options.rank);
  }
  int64_t trainable = 0;
  DW_ASSIGN_OR_RETURN(Sequence * sequence, qtt_sequence(id, context, trainable));
  DW_TRY(check_qtt_start(id, sequence->length, context.size(), trainable, sequence->adaptation.get(), options.rank));
  DW_CUDA_TRY(cudaSetDevice(options_.device));
  const cudaStream_t stream = stream_.get();
  QttReport report;
  report.options = options;
  report.context = trainable;
  report.span = std::min(options.span, trainable);
  const int64_t count = qtt_parameter_count(config_, options.rank);
  const size_t bytes = static_cast<size_t>(count) * sizeof(float);
  // Trained aside and attached at the end: an error leaves the sequence as it was.
  auto trained = std::make_shared<CudaQueryAdaptation>(options.rank, count, options_.device);
  DW_ASSIGN_OR_RETURN(trained->parameters, DeviceBuffer::allocate(bytes, "the qTTT parameters"));
  if (sequence->adaptation != nullptr) {
    DW_CUDA_TRY(cudaMemcpyAsync(trained->parameters.data(), sequence->adaptation->parameters.data(), bytes,
                                cudaMemcpyDeviceToDevice, stream));
  } else {
    const std::vector<float> initial = qtt_initial_parameters(config_, options.rank, options.seed);
    DW_TRY(cuda::copy_to_device(trained->parameters.data(), initial.data(), bytes, stream));
  }
  const bool adam = options.optimizer == QttOptimizer::adam;
  if (adam) {
    DW_ASSIGN_OR_RETURN(trained->first_moment, DeviceBuffer::allocate(bytes, "the qTTT optimizer state"));
    DW_ASSIGN_OR_RETURN(trained->second_moment, DeviceBuffer::allocate(bytes, "the qTTT optimizer state"));
    DW_CUDA_TRY(cudaMemsetAsync(trained->first_moment.data(), 0, bytes, stream));
    DW_CUDA_TRY(cudaMemsetAsync(trained->second_moment.data(), 0, bytes, stream));
  }
  if (qtt_buffers_ == nullptr) qtt_buffers_ = std::make_shared<QttBuffers>();
  DW_TRY(ensure(qtt_buffers_->gradient, bytes, "the qTTT gradient"));
  float* gradient = qtt_buffers_->gradient.as<float>();
  const std::vector<int64_t> starts = qtt_span_starts(options, trainable, report.span);
  for (int64_t step = 0; step < options.steps; ++step) {
    const int64_t first = starts[static_cast<size_t>(step)];
    DW_ASSIGN_OR_RETURN(const double loss, span_pass(*sequence, trained.get(), context, first, report.span, gradient));
    report.losses.push_back(loss);
    const float t = static_cast<float>(step + 1);
    const cuda::AdamStep adam_step{kQttAdamBeta1, kQttAdamBeta2, kQttAdamEpsilon, 1.0f - std::pow(kQttAdamBeta1, t),
                                   1.0f - std::pow(kQttAdamBeta2, t)};
    DW_TRY(cuda_status(cuda::qtt_optimizer_step(trained->parameters.as<float>(), gradient,
                                                trained->first_moment.as<float>(), trained->second_moment.as<float>(),
                                                count, options.learning_rate, adam ? &adam_step : nullptr, stream),
                       "qtt_optimizer_step"));
    report.flops += qtt_step_flops(config_, report.span, first, options.rank);
  }
  DW_CUDA_TRY(cudaStreamSynchronize(stream));
  report.parameter_bytes = trained->bytes();
  // The moments are training state only: the adaptation keeps its parameters.
  trained->first_moment = DeviceBuffer();
  trained->second_moment = DeviceBuffer();
  sequence->adaptation = std::move(trained);
  report.seconds = seconds_since(start);
  return report;
}

Expected<std::vector<float>> CudaDecoder::query_parameters(SequenceId id) const {
  const auto it = sequences_.find(id);
  if (it == sequences_.end()) return make_error("unknown sequence {}", id);
  const CudaQueryAdaptation* adaptation = it->second.adaptation.get();
  if (adaptation == nullptr) return std::vector<float>();
  DW_CUDA_TRY(cudaSetDevice(options_.device));
  std::vector<float> parameters(static_cast<size_t>(adaptation->count));
  DW_TRY(cuda::copy_to_host(parameters.data(), adaptation->parameters.data(), parameters.size() * 4, stream_.get()));
  return parameters;
}

Status CudaDecoder::set_query_parameters(SequenceId id, int64_t rank, std::span<const float> parameters) {
  const auto it = sequences_.find(id);
  if (it == sequences_.end()) return make_error("unknown sequence {}", id);
  if (parameters.empty()) {
    it->second.adaptation = nullptr;
    return {};
  }
  DW_TRY(check_qtt_shape());
  DW_TRY(check_qtt_parameters(config_, rank, std::min(config_.hidden_size, kMaxGpuRank), parameters.size()));
  const int64_t count = qtt_parameter_count(config_, rank);
  DW_CUDA_TRY(cudaSetDevice(options_.device));
  auto adaptation = std::make_shared<CudaQueryAdaptation>(rank, count, options_.device);
  DW_ASSIGN_OR_RETURN(adaptation->parameters, DeviceBuffer::allocate(parameters.size() * 4, "the qTTT parameters"));
  DW_TRY(cuda::copy_to_device(adaptation->parameters.data(), parameters.data(), parameters.size() * 4, stream_.get()));
  it->second.adaptation = std::move(adaptation);
  return {};
}

std::shared_ptr<QueryAdaptation> CudaDecoder::query_adaptation(SequenceId id) const {
  const auto it = sequences_.find(id);
  return it == sequences_.end() ? nullptr : it->second.adaptation;
}

Status CudaDecoder::attach_query_adaptation(SequenceId id, std::shared_ptr<QueryAdaptation> adaptation) {
  const auto it = sequences_.find(id);
  if (it == sequences_.end()) return make_error("unknown sequence {}", id);
  if (adaptation == nullptr) {
    it->second.adaptation = nullptr;
    return {};
  }
  DW_TRY(check_qtt_shape());
  auto own = std::dynamic_pointer_cast<CudaQueryAdaptation>(adaptation);
  if (own == nullptr || own->device != options_.device) {
    return make_error("qttt: the adaptation was made by another backend than {}", device_name());
  }
  if (own->count != qtt_parameter_count(config_, own->rank())) return make_error("qttt: the adaptation was made for another model");
  it->second.adaptation = std::move(own);
  return {};
}

Expected<std::string> CudaDecoder::weights_digest() const {
  DW_CUDA_TRY(cudaSetDevice(options_.device));
  Sha256 hash;
  std::vector<uint8_t> bytes;
  const auto add = [&](const DeviceBuffer& buffer) -> Status {
    bytes.resize(buffer.bytes());
    DW_TRY(cuda::copy_to_host(bytes.data(), buffer.data(), bytes.size(), stream_.get()));
    hash.update(bytes);
    return {};
  };
  DW_TRY(add(embedding_));
  for (const Layer& layer : layers_) {
    for (const DeviceBuffer* part : {&layer.input_norm, &layer.qkv_weight, &layer.qkv_bias, &layer.o_weight,
                                     &layer.o_bias, &layer.post_norm, &layer.gate_up, &layer.down}) {
      DW_TRY(add(*part));
    }
  }
  DW_TRY(add(final_norm_));
  DW_TRY(add(lm_head_));
  return hash.hex_digest();
}

Expected<std::string> CudaDecoder::cache_digest(SequenceId id) const {
  const auto it = sequences_.find(id);
  if (it == sequences_.end()) return make_error("unknown sequence {}", id);
  DW_CUDA_TRY(cudaSetDevice(options_.device));
  const Sequence& sequence = it->second;
  const int64_t block_size = options_.kv_block_size;
  const size_t row_bytes = static_cast<size_t>(config_.num_kv_heads * config_.head_dim) * sizeof(bf16);
  Sha256 hash;
  std::vector<uint8_t> bytes;
  for (const Layer& layer : layers_) {
    for (const DeviceBuffer* cache : {&layer.k_cache, &layer.v_cache}) {
      for (int64_t start = 0; start < sequence.length; start += block_size) {
        const int64_t rows = std::min(block_size, sequence.length - start);
        const size_t offset = static_cast<size_t>(sequence.blocks[static_cast<size_t>(start / block_size)] * block_size) * row_bytes;
        bytes.resize(static_cast<size_t>(rows) * row_bytes);
        DW_TRY(cuda::copy_to_host(bytes.data(), static_cast<const uint8_t*>(cache->data()) + offset, bytes.size(),
                                  stream_.get()));
        hash.update(bytes);
      }
    }
  }
  return hash.hex_digest();
}

}  // namespace draftwise
