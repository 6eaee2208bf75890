#include "target/decoder.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

namespace draftwise {

Status check_forward_batch(std::span<const ForwardRequest> batch, int64_t context_length,
                           int64_t vocab_size, const std::function<int64_t(SequenceId)>& length_of) {
  std::unordered_set<SequenceId> seen;
  for (const ForwardRequest& request : batch) {
    const int64_t length = length_of(request.sequence);
    if (length < 0) return make_error("unknown sequence {}", request.sequence);
    if (!seen.insert(request.sequence).second) {
      return make_error("sequence {} appears twice in one forward batch", request.sequence);
    }
    if (request.tokens.empty()) {
      return make_error("sequence {}: a forward request needs at least one token", request.sequence);
    }
    const int64_t new_length = length + static_cast<int64_t>(request.tokens.size());
    if (new_length > context_length) {
      return make_error("sequence {}: {} tokens exceed the context length {}", request.sequence,
                        new_length, context_length);
    }
    for (const int32_t token : request.tokens) {
      if (token < 0 || token >= vocab_size) {
        return make_error("token id {} is outside the vocabulary [0, {})", token, vocab_size);
      }
    }
    for (const int32_t row : request.logit_rows) {
      if (row < 0 || row >= static_cast<int32_t>(request.tokens.size())) {
        return make_error("sequence {}: logit row {} is outside its {} new tokens",
                          request.sequence, row, request.tokens.size());
      }
    }
  }
  return {};
}

Status check_early_exit_batch(std::span<const ForwardRequest> batch, const DraftHead* draft,
                              const ModelConfig& config, int64_t context_length,
                              const std::function<int64_t(SequenceId)>& length_of,
                              const std::function<PendingTokens(SequenceId)>& pending_of) {
  DW_TRY(check_forward_batch(batch, context_length, config.vocab_size, [&](SequenceId id) {
    const int64_t length = length_of(id);
    return length < 0 || draft == nullptr ? length : length + static_cast<int64_t>(pending_of(id).tokens.size());
  }));
  if (draft != nullptr) {
    if (draft->exit_layer < 1 || draft->exit_layer > config.num_layers) {
      return make_error("exit layer {} is outside [1, {}]", draft->exit_layer, config.num_layers);
    }
    if (!draft->norm_gain.empty() && static_cast<int64_t>(draft->norm_gain.size()) != config.hidden_size) {
      return make_error("the draft head's norm gain has {} values, the hidden size is {}", draft->norm_gain.size(),
                        config.hidden_size);
    }
    if (const LowRankAdapter* adapter = draft->adapter; adapter != nullptr) {
      if (adapter->rank < 1 || static_cast<int64_t>(adapter->a.size()) != adapter->rank * config.hidden_size ||
          static_cast<int64_t>(adapter->b.size()) != config.vocab_size * adapter->rank) {
        return make_error("the draft head's adapter has {} + {} values; rank {} needs [{}, {}] and [{}, {}]",
                          adapter->a.size(), adapter->b.size(), adapter->rank, adapter->rank, config.hidden_size,
                          config.vocab_size, adapter->rank);
      }
      if (!adapter->lens.empty() &&
          static_cast<int64_t>(adapter->lens.size()) != config.hidden_size * config.hidden_size) {
        return make_error("the draft head's lens has {} values; it needs [{}, {}]", adapter->lens.size(),
                          config.hidden_size, config.hidden_size);
      }
    }
  }
  for (const ForwardRequest& request : batch) {
    const PendingTokens pending = pending_of(request.sequence);
    if (pending.tokens.empty()) continue;
    if (draft != nullptr) {
      if (draft->exit_layer != pending.exit_layer) {
        return make_error("sequence {} holds tokens pending at exit layer {}, not {}", request.sequence,
                          pending.exit_layer, draft->exit_layer);
      }
      continue;
    }
    if (request.tokens.size() < pending.tokens.size() ||
        !std::equal(pending.tokens.begin(), pending.tokens.end(), request.tokens.begin())) {
      return make_error("sequence {}: a forward pass must begin with its {} pending tokens", request.sequence,
                        pending.tokens.size());
    }
  }
  return {};
}

std::vector<int32_t> argmax_rows(std::span<const float> logits, int64_t vocab) {
  std::vector<int32_t> best;
  if (vocab <= 0) return best;
  for (size_t start = 0; start + static_cast<size_t>(vocab) <= logits.size(); start += static_cast<size_t>(vocab)) {
    int64_t index = 0;
    for (int64_t i = 1; i < vocab; ++i) {
      if (logits[start + static_cast<size_t>(i)] > logits[start + static_cast<size_t>(index)]) index = i;
    }
    best.push_back(static_cast<int32_t>(index));
  }
  return best;
}

Status Decoder::forward_greedy(std::span<const ForwardRequest> batch, std::vector<int32_t>& tokens) {
  std::vector<int64_t> lengths;
  for (const ForwardRequest& request : batch) lengths.push_back(sequence_length(request.sequence));
  std::vector<float> logits;
  DW_TRY(forward(batch, logits));
  for (size_t i = 0; i < logits.size(); ++i) {
    if (std::isfinite(logits[i])) continue;
    for (size_t r = 0; r < batch.size(); ++r) DW_TRY(truncate_sequence(batch[r].sequence, lengths[r]));
    return make_error("the model produced a non-finite logit ({}) for token {} in requested row {}", logits[i],
                      static_cast<int64_t>(i) % config().vocab_size, static_cast<int64_t>(i) / config().vocab_size);
  }
  tokens = argmax_rows(logits, config().vocab_size);
  return {};
}

Status Decoder::forward_draft(std::span<const ForwardRequest>, const DraftHead&, std::vector<float>&) {
  return make_error("the {} backend has no early-exit passes", device_name());
}

Status Decoder::forward_draft_greedy(std::span<const ForwardRequest> batch, const DraftHead& head,
                                     std::vector<int32_t>& tokens) {
  std::vector<float> logits;
  DW_TRY(forward_draft(batch, head, logits));
  tokens = argmax_rows(logits, config().vocab_size);
  return {};
}

Expected<double> Decoder::time_all_reduce(int64_t, int64_t) {
  return make_error("the {} backend runs on one device: it has no all-reduce to time", device_name());
}

int64_t Decoder::pending_tokens(SequenceId sequence) const { return sequence_length(sequence) < 0 ? -1 : 0; }

namespace {

Error no_qttt(const Decoder& decoder) {
  return Error{fmt::format("qTTT is not available on this model and backend ({} on {}): it adapts the query "
                           "projections of attention layers, on the CPU and CUDA attention decoders",
                           architecture_name(decoder.config().architecture), decoder.device_name())};
}

}  // namespace

Expected<QttReport> Decoder::adapt_queries(SequenceId, std::span<const int32_t>, const QttOptions&) {
  return no_qttt(*this);
}

Expected<double> Decoder::query_loss(SequenceId, std::span<const int32_t>, int64_t, int64_t, std::vector<float>*) {
  return no_qttt(*this);
}

Expected<std::vector<float>> Decoder::query_parameters(SequenceId) const { return no_qttt(*this); }

Status Decoder::set_query_parameters(SequenceId, int64_t, std::span<const float>) { return no_qttt(*this); }

std::shared_ptr<QueryAdaptation> Decoder::query_adaptation(SequenceId) const { return nullptr; }

Status Decoder::attach_query_adaptation(SequenceId, std::shared_ptr<QueryAdaptation> adaptation) {
  if (adaptation == nullptr) return {};
  return no_qttt(*this);
}

}  // namespace draftwise
