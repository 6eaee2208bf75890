// qTTT on the CPU reference (QTTT.md): the span forward pass with frozen cached keys and
// values, its hand-written backward pass into ΔW_Q, and the training loop.
//
// Forward, per layer, for the span's rows x (positions first … first + count − 1):
//   n1 = rms_norm(x) · g1;  q = rope(n1 (W_Q + ΔW_Q)ᵀ + b_Q);  a = attention(q, K, V) over the
//   cache;  m = x + a W_Oᵀ + b_O;  x' = m + swiglu(rms_norm(m) · g2 · W_guᵀ) W_downᵀ.
// Backward: the LM head, the final norm, then per layer from the top the MLP (into m), the
// output projection and attention with respect to q only, RoPE's inverse rotation, ΔW_Q's
// gradient from n1, and n1's gradient through W_Q + ΔW_Q and the norm into x. K and V are
// constants, so nothing flows into them or into the hidden states that made them.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "kernels/cpu/activation.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/backward.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/norm.h"
#include "kernels/cpu/rope.h"
#include "kernels/sha256.h"
#include "target/cpu_decoder.h"

namespace draftwise {

class CpuQueryAdaptation final : public QueryAdaptation {
 public:
  CpuQueryAdaptation(int64_t rank, std::vector<float> parameters)
      : rank_(rank), parameters(std::move(parameters)) {}
  int64_t rank() const override { return rank_; }
  int64_t bytes() const override {
    return static_cast<int64_t>((parameters.size() + first_moment.size() + second_moment.size()) * sizeof(float));
  }

  int64_t rank_;
  std::vector<float> parameters;  // qtt_parameter_count(config, rank), layer after layer
  std::vector<float> first_moment, second_moment;  // Adam's, while training
};

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void hash_floats(Sha256& hash, std::span<const float> values) {
  hash.update({reinterpret_cast<const uint8_t*>(values.data()), values.size() * sizeof(float)});
}

}  // namespace

std::string CpuDecoder::weights_digest() const {
  Sha256 hash;
  hash_floats(hash, embedding_);
  for (const Layer& layer : layers_) {
    for (const std::vector<float>* part : {&layer.input_norm, &layer.qkv_weight, &layer.qkv_bias, &layer.o_weight,
                                           &layer.o_bias, &layer.post_norm, &layer.gate_up, &layer.down}) {
      hash_floats(hash, *part);
    }
  }
  hash_floats(hash, final_norm_);
  hash_floats(hash, lm_head_);
  return hash.hex_digest();
}

Expected<std::string> CpuDecoder::cache_digest(SequenceId id) const {
  const auto it = sequences_.find(id);
  if (it == sequences_.end()) return make_error("unknown sequence {}", id);
  const Sequence& sequence = it->second;
  const size_t used = static_cast<size_t>(sequence.length * config_.num_kv_heads * config_.head_dim);
  Sha256 hash;
  for (size_t l = 0; l < layers_.size(); ++l) {
    hash_floats(hash, std::span(sequence.keys[l]).first(used));
    hash_floats(hash, std::span(sequence.values[l]).first(used));
  }
  return hash.hex_digest();
}

void CpuDecoder::add_query_delta(const CpuQueryAdaptation& adaptation, size_t layer, const float* normed,
                                 int64_t rows, float* q, int64_t q_stride) {
  const int64_t hidden = config_.hidden_size;
  const int64_t q_dim = config_.num_heads * config_.head_dim;
  const int64_t rank = adaptation.rank();
  const float* parameters =
      adaptation.parameters.data() + static_cast<int64_t>(layer) * qtt_layer_parameters(config_, rank);
  std::vector<float> delta(static_cast<size_t>(rows * q_dim));  // [rows, q_dim]
  if (rank == 0) {
    cpu::matmul(normed, parameters, nullptr, delta.data(), rows, hidden, q_dim, pool_);
  } else {
    // (n Aᵀ) Bᵀ, A [rank, hidden] and B [q_dim, rank].
    std::vector<float> down(static_cast<size_t>(rows * rank));
    cpu::matmul(normed, parameters, nullptr, down.data(), rows, hidden, rank, pool_);
    cpu::matmul(down.data(), parameters + rank * hidden, nullptr, delta.data(), rows, rank, q_dim, pool_);
  }
  for (int64_t row = 0; row < rows; ++row) {
    float* target = q + row * q_stride;
    const float* source = &delta[static_cast<size_t>(row * q_dim)];
    for (int64_t i = 0; i < q_dim; ++i) target[i] += source[i];
  }
}

Expected<CpuDecoder::Sequence*> CpuDecoder::qtt_sequence(SequenceId id, std::span<const int32_t> context,
                                                         int64_t& trainable) {
  const auto it = sequences_.find(id);
  if (it == sequences_.end()) return make_error("unknown sequence {}", id);
  DW_ASSIGN_OR_RETURN(trainable, qtt_trainable_positions(it->second.length, context, config_.vocab_size));
  return &it->second;
}

Expected<double> CpuDecoder::query_loss(SequenceId id, std::span<const int32_t> context, int64_t first,
                                        int64_t count, std::vector<float>* gradient) {
  int64_t trainable = 0;
  DW_ASSIGN_OR_RETURN(Sequence * sequence, qtt_sequence(id, context, trainable));
  DW_TRY(check_qtt_positions(first, count, trainable));
  if (gradient != nullptr && sequence->adaptation == nullptr) {
    return make_error("qttt: sequence {} holds no adaptation to take a gradient for", id);
  }
  try {
    return span_loss(*sequence, sequence->adaptation.get(), context, first, count, gradient);
  } catch (const std::bad_alloc&) {
    return make_error("out of memory computing the qTTT loss of {} positions", count);
  }
}

Expected<double> CpuDecoder::span_loss(const Sequence& sequence, const CpuQueryAdaptation* adaptation,
                                       std::span<const int32_t> context, int64_t first, int64_t count,
                                       std::vector<float>* gradient) {
  const int64_t hidden = config_.hidden_size;
  const int64_t head_dim = config_.head_dim;
  const int64_t half = head_dim / 2;
  const int64_t q_dim = config_.num_heads * head_dim;
  const int64_t ffn = config_.intermediate_size;
  const int64_t vocab = config_.vocab_size;
  const size_t layers = layers_.size();
  const float eps = static_cast<float>(config_.rms_norm_eps);
  const cpu::AttentionShape shape{config_.num_heads, config_.num_kv_heads, head_dim,
                                  1.0f / std::sqrt(static_cast<float>(head_dim)), config_.sliding_window.value_or(0)};
  const int64_t rank = adaptation != nullptr ? adaptation->rank() : 0;
  const int64_t layer_parameters = qtt_layer_parameters(config_, rank);
  const auto size = [](int64_t a, int64_t b) { return static_cast<size_t>(a * b); };

  std::vector<int64_t> positions(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) positions[static_cast<size_t>(i)] = first + i;
  std::vector<float> rope_cos(size(count, half)), rope_sin(size(count, half));  // [count, half]
  cpu::rope_tables(positions.data(), count, inv_freq_.data(), half, rope_cos.data(), rope_sin.data());

  // What the backward pass needs of each layer's forward.
  struct Saved {
    std::vector<float> input;     // [count, hidden]: x
    std::vector<float> normed;    // [count, hidden]: n1
    std::vector<float> queries;   // [count, q_dim]: after RoPE
    std::vector<float> attended;  // [count, q_dim]
    std::vector<float> middle;    // [count, hidden]: m
    std::vector<float> gate_up;   // [count, 2·ffn]
  };
  std::vector<Saved> saved(gradient != nullptr ? layers : 0);

  std::vector<float> x(size(count, hidden));  // [count, hidden]: the residual stream
  for (int64_t i = 0; i < count; ++i) {
    std::memcpy(&x[size(i, hidden)], &embedding_[size(context[static_cast<size_t>(first + i)], hidden)],
                static_cast<size_t>(hidden) * sizeof(float));
  }
  std::vector<float> normed(size(count, hidden)), queries(size(count, q_dim)), attended(size(count, q_dim));
  std::vector<float> projected(size(count, hidden)), gate_up(size(count, 2 * ffn)), activated(size(count, ffn));
  for (size_t l = 0; l < layers; ++l) {
    const Layer& layer = layers_[l];
    cpu::rms_norm(x.data(), layer.input_norm.data(), normed.data(), count, hidden, eps, pool_);
    // W_Q is the first q_dim rows of the stacked q, k, v weight.
    cpu::matmul(normed.data(), layer.qkv_weight.data(), layer.qkv_bias.empty() ? nullptr : layer.qkv_bias.data(),
                queries.data(), count, hidden, q_dim, pool_);
    if (adaptation != nullptr) add_query_delta(*adaptation, l, normed.data(), count, queries.data(), q_dim);
    cpu::apply_rope(queries.data(), q_dim, count, config_.num_heads, head_dim, rope_cos.data(), rope_sin.data(),
                    cpu::RopePairing::half_split);
    cpu::attention(queries.data(), sequence.keys[l].data(), sequence.values[l].data(), attended.data(), count, first,
                   shape, pool_);
    if (gradient != nullptr) {
      saved[l].input = x;
      saved[l].normed = normed;
      saved[l].queries = queries;
      saved[l].attended = attended;
    }
    cpu::matmul(attended.data(), layer.o_weight.data(), layer.o_bias.empty() ? nullptr : layer.o_bias.data(),
                projected.data(), count, q_dim, hidden, pool_);
    for (size_t i = 0; i < x.size(); ++i) x[i] += projected[i];
    if (gradient != nullptr) saved[l].middle = x;
    cpu::rms_norm(x.data(), layer.post_norm.data(), normed.data(), count, hidden, eps, pool_);
    cpu::matmul(normed.data(), layer.gate_up.data(), nullptr, gate_up.data(), count, hidden, 2 * ffn, pool_);
    for (int64_t row = 0; row < count; ++row) {
      cpu::swiglu(&gate_up[size(row, 2 * ffn)], &gate_up[size(row, 2 * ffn) + ffn], &activated[size(row, ffn)], ffn);
    }
    cpu::matmul(activated.data(), layer.down.data(), nullptr, projected.data(), count, ffn, hidden, pool_);
    for (size_t i = 0; i < x.size(); ++i) x[i] += projected[i];
    if (gradient != nullptr) saved[l].gate_up = gate_up;
  }

  // Mean next-token loss; its gradient with respect to the logits is (softmax − onehot) / count.
  cpu::rms_norm(x.data(), final_norm_.data(), normed.data(), count, hidden, eps, pool_);
  std::vector<float> logits(size(count, vocab));  // [count, vocab], then their gradient
  cpu::matmul(normed.data(), lm_head().data(), nullptr, logits.data(), count, hidden, vocab, pool_);
  std::vector<double> row_losses(static_cast<size_t>(count));
  pool_.parallel_for(count, [&](int64_t row) {
    float* values = &logits[size(row, vocab)];
    const int32_t target = context[static_cast<size_t>(first + row + 1)];
    const float largest = *std::max_element(values, values + vocab);
    double total = 0;
    for (int64_t v = 0; v < vocab; ++v) total += std::exp(static_cast<double>(values[v] - largest));
    const double log_total = std::log(total) + largest;
    row_losses[static_cast<size_t>(row)] = log_total - values[target];
    if (gradient == nullptr) return;
    const double scale = 1.0 / static_cast<double>(count);
    for (int64_t v = 0; v < vocab; ++v) {
      values[v] = static_cast<float>(std::exp(values[v] - log_total) * scale);
    }
    values[target] -= static_cast<float>(scale);
  });
  double loss = 0;
  for (const double row_loss : row_losses) loss += row_loss;
  loss /= static_cast<double>(count);
  if (!std::isfinite(loss)) return make_error("qttt: the loss is not finite ({})", loss);
  if (gradient == nullptr) return loss;

  gradient->assign(static_cast<size_t>(qtt_parameter_count(config_, rank)), 0.0f);
  std::vector<float> d_normed(size(count, hidden));  // [count, hidden]
  std::vector<float> dx(size(count, hidden));        // [count, hidden]: the residual stream's gradient
  cpu::matmul_nn(logits.data(), lm_head().data(), d_normed.data(), count, vocab, hidden, false, pool_);
  cpu::rms_norm_backward(x.data(), final_norm_.data(), d_normed.data(), dx.data(), count, hidden, eps, false, pool_);
  std::vector<float> d_activated(size(count, ffn)), d_gate_up(size(count, 2 * ffn));
  std::vector<float> d_attended(size(count, q_dim)), d_queries(size(count, q_dim));
  std::vector<float> down(size(count, std::max<int64_t>(rank, 1))), d_down(size(count, std::max<int64_t>(rank, 1)));
  std::vector<float> inverse_sin(rope_sin.size());
  for (size_t i = 0; i < rope_sin.size(); ++i) inverse_sin[i] = -rope_sin[i];
  for (size_t l = layers; l-- > 0;) {
    const Layer& layer = layers_[l];
    const Saved& kept = saved[l];
    // MLP: x' = m + down(swiglu(gate_up(norm(m)))).
    cpu::matmul_nn(dx.data(), layer.down.data(), d_activated.data(), count, hidden, ffn, false, pool_);
    cpu::swiglu_backward(kept.gate_up.data(), d_activated.data(), d_gate_up.data(), count, ffn);
    cpu::matmul_nn(d_gate_up.data(), layer.gate_up.data(), d_normed.data(), count, 2 * ffn, hidden, false, pool_);
    cpu::rms_norm_backward(kept.middle.data(), layer.post_norm.data(), d_normed.data(), dx.data(), count, hidden, eps,
                           true, pool_);
    // Attention: m = x + o(attention(q)); only q carries a gradient.
    cpu::matmul_nn(dx.data(), layer.o_weight.data(), d_attended.data(), count, hidden, q_dim, false, pool_);
    cpu::attention_query_backward(kept.queries.data(), sequence.keys[l].data(), sequence.values[l].data(),
                                  kept.attended.data(), d_attended.data(), d_queries.data(), count, first, shape,
                                  pool_);
    // RoPE is a rotation: its transpose rotates back.
    cpu::apply_rope(d_queries.data(), q_dim, count, config_.num_heads, head_dim, rope_cos.data(), inverse_sin.data(),
                    cpu::RopePairing::half_split);
    float* layer_gradient = gradient->data() + static_cast<int64_t>(l) * layer_parameters;
    const float* parameters =
        adaptation->parameters.data() + static_cast<int64_t>(l) * layer_parameters;
    if (rank == 0) {
      cpu::weight_gradient(d_queries.data(), kept.normed.data(), layer_gradient, count, q_dim, hidden, pool_);
    } else {
      // ΔW_Q = B A: dB = dq (n Aᵀ)ᵀ-wise, dA = (dq B)ᵀ n.
      const float* a = parameters;
      const float* b = parameters + rank * hidden;
      cpu::matmul(kept.normed.data(), a, nullptr, down.data(), count, hidden, rank, pool_);
      cpu::matmul_nn(d_queries.data(), b, d_down.data(), count, q_dim, rank, false, pool_);
      cpu::weight_gradient(d_down.data(), kept.normed.data(), layer_gradient, count, rank, hidden, pool_);
      cpu::weight_gradient(d_queries.data(), down.data(), layer_gradient + rank * hidden, count, q_dim, rank, pool_);
    }
    if (l == 0) break;  // nothing trainable below the first layer's queries
    // n1's gradient through W_Q + ΔW_Q, then the input norm, into x.
    cpu::matmul_nn(d_queries.data(), layer.qkv_weight.data(), d_normed.data(), count, q_dim, hidden, false, pool_);
    if (rank == 0) {
      cpu::matmul_nn(d_queries.data(), parameters, d_normed.data(), count, q_dim, hidden, true, pool_);
    } else {
      cpu::matmul_nn(d_down.data(), parameters, d_normed.data(), count, rank, hidden, true, pool_);
    }
    cpu::rms_norm_backward(kept.input.data(), layer.input_norm.data(), d_normed.data(), dx.data(), count, hidden, eps,
                           true, pool_);
  }
  return loss;
}

Expected<QttReport> CpuDecoder::adapt_queries(SequenceId id, std::span<const int32_t> context,
                                              const QttOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  DW_TRY(check_qtt_options(options, config_));
  int64_t trainable = 0;
  DW_ASSIGN_OR_RETURN(Sequence * sequence, qtt_sequence(id, context, trainable));
  DW_TRY(check_qtt_start(id, sequence->length, context.size(), trainable, sequence->adaptation.get(), options.rank));
  QttReport report;
  report.options = options;
  report.context = trainable;
  report.span = std::min(options.span, trainable);
  try {
    std::shared_ptr<CpuQueryAdaptation> adaptation = sequence->adaptation;
    if (adaptation == nullptr) {
      adaptation = std::make_shared<CpuQueryAdaptation>(options.rank,
                                                        qtt_initial_parameters(config_, options.rank, options.seed));
    }
    const int64_t count = static_cast<int64_t>(adaptation->parameters.size());
    adaptation->first_moment.assign(static_cast<size_t>(count), 0.0f);
    adaptation->second_moment.assign(static_cast<size_t>(count), 0.0f);
    // Trained aside and attached at the end: an error leaves the sequence as it was.
    auto trained = std::make_shared<CpuQueryAdaptation>(*adaptation);
    CpuQueryAdaptation& state = *trained;
    std::vector<float> gradient;
    const std::vector<int64_t> starts = qtt_span_starts(options, trainable, report.span);
    for (int64_t step = 0; step < options.steps; ++step) {
      const int64_t first = starts[static_cast<size_t>(step)];
      DW_ASSIGN_OR_RETURN(const double loss, span_loss(*sequence, trained.get(), context, first, report.span, &gradient));
      report.losses.push_back(loss);
      qtt_optimizer_step(options, step + 1, state.parameters.data(), gradient.data(), state.first_moment.data(),
                         state.second_moment.data(), count);
      report.flops += qtt_step_flops(config_, report.span, first, options.rank);
    }
    report.parameter_bytes = state.bytes();
    // The moments are training state only: the adaptation keeps its parameters.
    std::vector<float>().swap(state.first_moment);
    std::vector<float>().swap(state.second_moment);
    sequence->adaptation = std::move(trained);
  } catch (const std::bad_alloc&) {
    return make_error("out of memory adapting the queries of sequence {} (qTTT at rank {})", id, options.rank);
  }
  report.seconds = seconds_since(start);
  return report;
}

Expected<std::vector<float>> CpuDecoder::query_parameters(SequenceId id) const {
  const auto it = sequences_.find(id);
  if (it == sequences_.end()) return make_error("unknown sequence {}", id);
  if (it->second.adaptation == nullptr) return std::vector<float>();
  return it->second.adaptation->parameters;
}

Status CpuDecoder::set_query_parameters(SequenceId id, int64_t rank, std::span<const float> parameters) {
  const auto it = sequences_.find(id);
  if (it == sequences_.end()) return make_error("unknown sequence {}", id);
  if (parameters.empty()) {
    it->second.adaptation = nullptr;
    return {};
  }
  DW_TRY(check_qtt_parameters(config_, rank, config_.hidden_size, parameters.size()));
  it->second.adaptation =
      std::make_shared<CpuQueryAdaptation>(rank, std::vector<float>(parameters.begin(), parameters.end()));
  return {};
}

std::shared_ptr<QueryAdaptation> CpuDecoder::query_adaptation(SequenceId id) const {
  const auto it = sequences_.find(id);
  return it == sequences_.end() ? nullptr : it->second.adaptation;
}

Status CpuDecoder::attach_query_adaptation(SequenceId id, std::shared_ptr<QueryAdaptation> adaptation) {
  const auto it = sequences_.find(id);
  if (it == sequences_.end()) return make_error("unknown sequence {}", id);
  if (adaptation == nullptr) {
    it->second.adaptation = nullptr;
    return {};
  }
  auto own = std::dynamic_pointer_cast<CpuQueryAdaptation>(adaptation);
  if (own == nullptr) return make_error("qttt: the adaptation was made by another backend than the CPU's");
  if (static_cast<int64_t>(own->parameters.size()) != qtt_parameter_count(config_, own->rank())) {
    return make_error("qttt: the adaptation was made for another model");
  }
  it->second.adaptation = std::move(own);
  return {};
}

}  // namespace draftwise
