#include "draft/dvi_loss.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/matmul.h"

namespace draftwise {

namespace {

constexpr int64_t kVocabChunk = 2048;

// log Σ exp(x[i] · scale)
double log_sum_exp(const float* x, int64_t n, double scale) {
  double largest = -INFINITY;
  for (int64_t i = 0; i < n; ++i) largest = std::max(largest, x[i] * scale);
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) total += std::exp(x[i] * scale - largest);
  return largest + std::log(total);
}

}  // namespace

namespace dvi {

Status check_records(std::span<const DraftRecord* const> records, const DraftAdapter& adapter,
                     int64_t hidden, const DviLossWeights& weights) {
  if (records.empty()) return make_error("the learner's loss needs at least one record");
  if (adapter.shape.hidden != hidden) {
    return make_error("the adapter is for hidden size {}, this LM head's is {}",
                      adapter.shape.hidden, hidden);
  }
  if (adapter.shape.lens != !adapter.lens.empty() ||
      (!adapter.lens.empty() && static_cast<int64_t>(adapter.lens.size()) != hidden * hidden)) {
    return make_error("the adapter's lens has {} values; hidden size {} needs {}", adapter.lens.size(), hidden,
                      adapter.shape.lens ? hidden * hidden : 0);
  }
  if (!(weights.temperature > 0.0f)) {
    return make_error("the distillation temperature must be positive");
  }
  for (const DraftRecord* record : records) {
    if (static_cast<int64_t>(record->hidden.size()) != hidden || record->token < 0 ||
        record->token >= adapter.shape.vocab ||
        record->verifier_tokens.size() != record->verifier_logits.size()) {
      return make_error("a learner record does not fit the model (hidden {}, token {})",
                        record->hidden.size(), record->token);
    }
  }
  return {};
}

NormedRecords normalize(std::span<const DraftRecord* const> records, const DraftAdapter& adapter,
                        float eps, cpu::ThreadPool& pool) {
  const int64_t count = static_cast<int64_t>(records.size());
  const int64_t hidden = static_cast<int64_t>(adapter.gain.size());
  NormedRecords out;
  out.hidden.resize(static_cast<size_t>(count * hidden));
  out.normed.resize(out.hidden.size());
  out.inverse_rms.resize(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    std::memcpy(&out.hidden[static_cast<size_t>(i * hidden)], records[static_cast<size_t>(i)]->hidden.data(),
                static_cast<size_t>(hidden) * sizeof(float));
  }
  if (!adapter.lens.empty()) {
    out.exit = out.hidden;
    std::vector<float> mapped(out.hidden.size());
    cpu::matmul(out.exit.data(), adapter.lens.data(), nullptr, mapped.data(), count, hidden, hidden, pool);
    for (size_t k = 0; k < mapped.size(); ++k) out.hidden[k] += mapped[k];
  }
  for (int64_t i = 0; i < count; ++i) {
    const float* source = &out.hidden[static_cast<size_t>(i * hidden)];
    double squares = 0.0;
    for (int64_t k = 0; k < hidden; ++k) squares += static_cast<double>(source[k]) * source[k];
    out.inverse_rms[i] =
        static_cast<float>(1.0 / std::sqrt(squares / static_cast<double>(hidden) + eps));
    for (int64_t k = 0; k < hidden; ++k) {
      out.normed[i * hidden + k] = source[k] * out.inverse_rms[i] * adapter.gain[k];
    }
  }
  return out;
}

void finish_gradients(const DraftAdapter& adapter, const NormedRecords& normed,
                      std::vector<float> head_product, std::vector<float> b_product,
                      DviGradients& gradients, cpu::ThreadPool& pool) {
  const int64_t hidden = adapter.shape.hidden;
  const int64_t rank = adapter.shape.rank;
  const int64_t count = static_cast<int64_t>(normed.inverse_rms.size());
  std::vector<float>& dn = head_product;  // becomes ∂n
  std::vector<float>& du = b_product;     // becomes γ Bᵀ ∂z
  for (float& value : du) value *= adapter.scale();
  // ∂A = Σ_i du_i n_iᵀ; ∂n += Aᵀ du; ∂gain = Σ_i ∂n_i ⊙ h_i / rms(h_i).
  gradients.a.assign(static_cast<size_t>(rank * hidden), 0.0f);
  gradients.gain.assign(static_cast<size_t>(hidden), 0.0f);
  for (int64_t i = 0; i < count; ++i) {
    for (int64_t j = 0; j < rank; ++j) {
      const float g = du[static_cast<size_t>(i * rank + j)];
      cpu::axpy(g, &normed.normed[static_cast<size_t>(i * hidden)],
                &gradients.a[static_cast<size_t>(j * hidden)], hidden);
      cpu::axpy(g, &adapter.a[static_cast<size_t>(j * hidden)],
                &dn[static_cast<size_t>(i * hidden)], hidden);
    }
    for (int64_t k = 0; k < hidden; ++k) {
      gradients.gain[k] +=
          dn[i * hidden + k] * normed.hidden[i * hidden + k] * normed.inverse_rms[i];
    }
  }
  gradients.lens.clear();
  if (adapter.lens.empty()) return;
  // ∂x through the norm, record by record; then ∂M = Σ_i ∂x_i h_iᵀ, row by row of M.
  std::vector<float> dx(static_cast<size_t>(count * hidden));  // [N, hidden]
  for (int64_t i = 0; i < count; ++i) {
    const float* x = &normed.hidden[static_cast<size_t>(i * hidden)];
    const float* dn_i = &dn[static_cast<size_t>(i * hidden)];
    const double rho = normed.inverse_rms[i];
    double projection = 0.0;
    for (int64_t k = 0; k < hidden; ++k) projection += static_cast<double>(adapter.gain[k]) * dn_i[k] * x[k];
    const double shrink = rho * rho * rho * projection / static_cast<double>(hidden);
    for (int64_t k = 0; k < hidden; ++k) {
      dx[static_cast<size_t>(i * hidden + k)] =
          static_cast<float>(rho * adapter.gain[k] * dn_i[k] - shrink * x[k]);
    }
  }
  gradients.lens.assign(static_cast<size_t>(hidden * hidden), 0.0f);
  pool.parallel_for(hidden, [&](int64_t o) {
    float* row = &gradients.lens[static_cast<size_t>(o * hidden)];
    for (int64_t i = 0; i < count; ++i) {
      cpu::axpy(dx[static_cast<size_t>(i * hidden + o)], &normed.exit[static_cast<size_t>(i * hidden)], row, hidden);
    }
  });
}

DviLossTerms mean_terms(std::span<const double> terms, const DviLossWeights& weights) {
  const size_t count = terms.size() / 3;
  DviLossTerms mean;
  for (size_t i = 0; i < count; ++i) {
    mean.distillation += terms[3 * i] / static_cast<double>(count);
    mean.cross_entropy += terms[3 * i + 1] / static_cast<double>(count);
    mean.policy_gradient += terms[3 * i + 2] / static_cast<double>(count);
  }
  mean.total = weights.distillation * mean.distillation +
               weights.cross_entropy * mean.cross_entropy +
               weights.policy_gradient * mean.policy_gradient;
  return mean;
}

}  // namespace dvi

Expected<DviLossTerms> CpuDraftHeadTrainer::loss_and_gradients(
    std::span<const DraftRecord* const> records, const DraftAdapter& adapter,
    const DviLossWeights& weights, DviGradients& gradients) {
  const int64_t count = static_cast<int64_t>(records.size());
  const int64_t hidden = hidden_;
  const int64_t vocab = adapter.shape.vocab;
  const int64_t rank = adapter.shape.rank;
  const float scale = adapter.scale();
  DW_TRY(dvi::check_records(records, adapter, hidden, weights));
  if (static_cast<int64_t>(lm_head_.size()) != vocab * hidden) {
    return make_error("the adapter's vocabulary of {} does not fit this LM head ({} values for "
                      "hidden size {})",
                      vocab, lm_head_.size(), hidden);
  }

  // Forward: n = rms_norm(h, gain), u = A n, z = W_lm n + γ B u.
  const dvi::NormedRecords normed_records = dvi::normalize(records, adapter, eps_, pool_);
  const std::vector<float>& normed = normed_records.normed;      // [N, hidden]
  std::vector<float> logits(static_cast<size_t>(count * vocab));  // [N, vocab]
  std::vector<float> down(static_cast<size_t>(count * rank));     // [N, rank]: u
  std::vector<float> up(logits.size());                           // [N, vocab]: B u
  cpu::matmul(normed.data(), lm_head_.data(), nullptr, logits.data(), count, hidden, vocab, pool_);
  cpu::matmul(normed.data(), adapter.a.data(), nullptr, down.data(), count, hidden, rank, pool_);
  cpu::matmul(down.data(), adapter.b.data(), nullptr, up.data(), count, rank, vocab, pool_);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] += scale * up[i];

  // ∂L/∂z row by row (in place of the logits), and the loss terms.
  const double temperature = weights.temperature;
  const double inverse_count = 1.0 / static_cast<double>(count);
  std::vector<double> terms(static_cast<size_t>(count * 3));  // [N, 3]
  pool_.parallel_for(count, [&](int64_t i) {
    const DraftRecord& record = *records[static_cast<size_t>(i)];
    float* z = &logits[static_cast<size_t>(i * vocab)];
    const double log_normalizer = log_sum_exp(z, vocab, 1.0);
    const double log_p_token = z[record.token] - log_normalizer;
    double* own = &terms[static_cast<size_t>(i * 3)];
    own[1] = record.reward * -log_p_token;
    double importance = 1.0;
    if (weights.importance_clip > 0.0f) {
      importance = std::min<double>(weights.importance_clip,
                                    std::exp(log_p_token - record.draft_log_probability));
    }
    if (record.serial < weights.policy_gradient_from) importance = 0.0;
    const double advantage = (record.reward - weights.baseline) * importance;
    own[2] = advantage * -log_p_token;
    const double token_coefficient =
        weights.cross_entropy * record.reward + weights.policy_gradient * advantage;

    const size_t top = record.verifier_tokens.size();
    const bool distil = weights.distillation != 0.0f && top > 0;
    double log_normalizer_t = 0.0;
    std::vector<double> teacher(top);  // q over S
    if (distil) {
      log_normalizer_t = log_sum_exp(z, vocab, 1.0 / temperature);
      const double teacher_normalizer =
          log_sum_exp(record.verifier_logits.data(), static_cast<int64_t>(top), 1.0 / temperature);
      double kl = 0.0;
      for (size_t k = 0; k < top; ++k) {
        const double log_q = record.verifier_logits[k] / temperature - teacher_normalizer;
        teacher[k] = std::exp(log_q);
        const double log_p = z[record.verifier_tokens[k]] / temperature - log_normalizer_t;
        kl += teacher[k] * (log_q - log_p);
      }
      own[0] = temperature * temperature * kl;
    }
    for (int64_t v = 0; v < vocab; ++v) {
      double gradient = token_coefficient * std::exp(z[v] - log_normalizer);
      if (distil) {
        gradient += weights.distillation * temperature * std::exp(z[v] / temperature - log_normalizer_t);
      }
      z[v] = static_cast<float>(gradient);
    }
    z[record.token] -= static_cast<float>(token_coefficient);
    if (distil) {
      for (size_t k = 0; k < top; ++k) {
        z[record.verifier_tokens[k]] -=
            static_cast<float>(weights.distillation * temperature * teacher[k]);
      }
    }
    for (int64_t v = 0; v < vocab; ++v) z[v] = static_cast<float>(z[v] * inverse_count);
  });
  const std::vector<float>& dz = logits;  // [N, vocab]

  // Backward through the vocabulary in fixed chunks (partial sums added in chunk order, so
  // that the result does not depend on the threads): Σ_v ∂z W_lm, Σ_v ∂z B, and ∂B.
  gradients.b.assign(static_cast<size_t>(vocab * rank), 0.0f);
  const int64_t chunks = (vocab + kVocabChunk - 1) / kVocabChunk;
  std::vector<float> partial_dn(static_cast<size_t>(chunks * count * hidden), 0.0f);
  std::vector<float> partial_bt(static_cast<size_t>(chunks * count * rank), 0.0f);
  pool_.parallel_for(chunks, [&](int64_t c) {
    const int64_t first = c * kVocabChunk;
    const int64_t last = std::min(vocab, first + kVocabChunk);
    float* dn = &partial_dn[static_cast<size_t>(c * count * hidden)];
    float* bt = &partial_bt[static_cast<size_t>(c * count * rank)];
    for (int64_t v = first; v < last; ++v) {
      const float* w_row = &lm_head_[static_cast<size_t>(v * hidden)];
      const float* b_row = &adapter.b[static_cast<size_t>(v * rank)];
      float* db_row = &gradients.b[static_cast<size_t>(v * rank)];
      for (int64_t i = 0; i < count; ++i) {
        const float g = dz[static_cast<size_t>(i * vocab + v)];
        cpu::axpy(g, w_row, dn + i * hidden, hidden);
        for (int64_t j = 0; j < rank; ++j) {
          bt[i * rank + j] += g * b_row[j];
          db_row[j] += scale * g * down[static_cast<size_t>(i * rank + j)];
        }
      }
    }
  });
  std::vector<float> dn(static_cast<size_t>(count * hidden), 0.0f);  // [N, hidden]
  std::vector<float> bt(static_cast<size_t>(count * rank), 0.0f);    // [N, rank]
  for (int64_t c = 0; c < chunks; ++c) {
    for (size_t k = 0; k < dn.size(); ++k) dn[k] += partial_dn[static_cast<size_t>(c) * dn.size() + k];
    for (size_t k = 0; k < bt.size(); ++k) bt[k] += partial_bt[static_cast<size_t>(c) * bt.size() + k];
  }
  dvi::finish_gradients(adapter, normed_records, std::move(dn), std::move(bt), gradients, pool_);
  return dvi::mean_terms(terms, weights);
}

}  // namespace draftwise
