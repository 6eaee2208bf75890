#include "target/ttt_decoder.h"

#include <algorithm>
#include <exception>
#include <filesystem>
#include <fstream>
#include <new>

#include <nlohmann/json.hpp>

#include "kernels/cpu/matmul.h"
#include "kernels/cpu/norm.h"

namespace draftwise {

ModelConfig model_config_of(const TttConfig& c) {
  ModelConfig config;
  config.architecture = Architecture::ttt;
  config.vocab_size = c.vocab_size;
  config.hidden_size = c.hidden_size;
  config.intermediate_size = c.intermediate_size;
  config.num_layers = c.num_layers;
  config.num_heads = c.num_heads;
  config.num_kv_heads = c.hybrid() ? c.num_kv_heads : c.num_heads;
  config.head_dim = c.head_dim();
  config.max_position_embeddings = c.max_position_embeddings;
  config.rope_theta = c.rope_theta;
  config.rms_norm_eps = c.rms_norm_eps;
  config.tie_word_embeddings = c.tie_word_embeddings;
  config.bos_token_id = c.bos_token_id;
  config.eos_token_ids = c.eos_token_ids;
  return config;
}

bool is_ttt_model_folder(const std::string& path) {
  std::error_code error;
  const std::filesystem::path config =
      std::filesystem::is_directory(path, error) ? std::filesystem::path(path) / "config.json" : std::filesystem::path(path);
  std::ifstream in(config);
  if (!in) return false;
  const nlohmann::json json = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  return json.is_object() && json.contains("model_type") && json["model_type"] == "ttt";
}

TttDecoder::TttDecoder(std::unique_ptr<TttModel> model, const TttDecoderOptions& options)
    : model_(std::move(model)),
      config_(model_config_of(model_->config())),
      context_length_(options.context_length > 0 ? options.context_length : config_.max_position_embeddings),
      pool_(options.num_threads) {}

Expected<std::unique_ptr<TttDecoder>> TttDecoder::create(std::unique_ptr<TttModel> model,
                                                         const TttDecoderOptions& options) {
  if (model == nullptr) return make_error("no TTT model");
  if (options.context_length < 0) return make_error("the context length must not be negative");
  return std::unique_ptr<TttDecoder>(new TttDecoder(std::move(model), options));
}

SequenceId TttDecoder::create_sequence() {
  const SequenceId id = next_sequence_++;
  sequences_[id].state = model_->initial_state();
  return id;
}

void TttDecoder::release_sequence(SequenceId sequence) { sequences_.erase(sequence); }

int64_t TttDecoder::sequence_length(SequenceId sequence) const {
  const auto it = sequences_.find(sequence);
  return it == sequences_.end() ? -1 : static_cast<int64_t>(it->second.tokens.size());
}

int64_t TttDecoder::pending_tokens(SequenceId sequence) const {
  const auto it = sequences_.find(sequence);
  return it == sequences_.end() ? -1 : static_cast<int64_t>(it->second.pending.size());
}

CacheUsage TttDecoder::cache_usage() const {
  CacheUsage usage;
  for (const auto& [id, sequence] : sequences_) {
    const int64_t positions = static_cast<int64_t>(sequence.tokens.size() + sequence.pending.size());
    usage.used_blocks += (positions + usage.block_size - 1) / usage.block_size;
  }
  return usage;
}

Expected<std::vector<float>> TttDecoder::final_norm_weight() const {
  return std::vector<float>(model_->final_norm().begin(), model_->final_norm().end());
}

Status TttDecoder::truncate_sequence(SequenceId id, int64_t length) {
  const auto it = sequences_.find(id);
  if (it == sequences_.end()) return make_error("unknown sequence {}", id);
  Sequence& sequence = it->second;
  const int64_t current = static_cast<int64_t>(sequence.tokens.size());
  if (length < 0 || length > current) {
    return make_error("sequence {}: cannot truncate to {} (it holds {} tokens)", id, length, current);
  }
  if (length == current && sequence.pending.empty()) return {};
  // The new state is built aside and swapped in: out of memory leaves the sequence as it was.
  try {
    const bool restore = sequence.saved && sequence.saved_length <= length;
    const int64_t from = restore ? sequence.saved_length : 0;
    TttState work = restore ? sequence.saved->copy_without_caches() : model_->initial_state();
    // The attention caches' rows before `from` hold; those the replay writes get the same tokens.
    work.take_caches(sequence.state);
    try {
      if (length > from) {
        std::vector<float> x;
        const std::span<const int32_t> replay(sequence.tokens.data() + from, static_cast<size_t>(length - from));
        model_->embed(replay, x);
        model_->run_layers(work, 0, static_cast<size_t>(config_.num_layers), from, length - from, x);
      }
    } catch (const std::bad_alloc&) {
      sequence.state.take_caches(work);
      throw;
    }
    work.position = length;
    sequence.state = std::move(work);
    if (!restore) sequence.saved.reset();
    ++(restore ? restores_ : recomputes_);
  } catch (const std::bad_alloc&) {
    return make_error("sequence {}: out of memory rolling back to {} tokens; it is unchanged", id, length);
  }
  sequence.pending.clear();
  sequence.pending_hidden.clear();
  sequence.pending_exit = 0;
  sequence.tokens.resize(static_cast<size_t>(length));
  return {};
}

Status TttDecoder::forward(std::span<const ForwardRequest> batch, std::vector<float>& logits) {
  return pass(batch, nullptr, logits);
}

Status TttDecoder::forward_draft(std::span<const ForwardRequest> batch, const DraftHead& head,
                                 std::vector<float>& logits) {
  return pass(batch, &head, logits);
}

Status TttDecoder::pass(std::span<const ForwardRequest> batch, const DraftHead* draft, std::vector<float>& logits) {
  DW_TRY(check_early_exit_batch(
      batch, draft, config_, context_length_, [this](SequenceId id) { return sequence_length(id); },
      [this](SequenceId id) {
        const Sequence& sequence = sequences_.at(id);
        return PendingTokens{sequence.pending, sequence.pending_exit};
      }));
  std::vector<float> rows;  // [Σ logit rows, C]
  std::vector<SequenceId> reached;  // sequences the pass has begun to change
  try {
    for (const ForwardRequest& request : batch) {
      Sequence& sequence = sequences_.at(request.sequence);
      reached.push_back(request.sequence);
      // What this pass may have to undo: a round's first draft pass or a forward pass.
      if (sequence.pending.empty()) {
        sequence.saved = sequence.state.copy_without_caches();
        sequence.saved_length = static_cast<int64_t>(sequence.tokens.size());
      }
      run_request(sequence, request, draft, rows);
    }
    head_logits(rows, draft, logits);
  } catch (const std::exception& error) {
    // Out of memory (or another failure of the standard library): the sequences this pass
    // touched go back to their lengths before it; those that held pending draft tokens lose
    // them (their copy is from before the round).
    for (const SequenceId id : reached) {
      Sequence& sequence = sequences_.at(id);
      if (sequence.saved) {
        TttState back = sequence.saved->copy_without_caches();
        back.take_caches(sequence.state);
        sequence.state = std::move(back);
        sequence.tokens.resize(static_cast<size_t>(sequence.saved_length));
      }
      sequence.pending.clear();
      sequence.pending_hidden.clear();
      sequence.pending_exit = 0;
    }
    return make_error("a TTT pass failed ({}): its sequences are back at their lengths before it, without pending "
                      "draft tokens",
                      error.what());
  }
  return {};
}

void TttDecoder::run_request(Sequence& sequence, const ForwardRequest& request, const DraftHead* draft,
                             std::vector<float>& rows) {
  const size_t C = static_cast<size_t>(config_.hidden_size);
  const size_t layers = static_cast<size_t>(config_.num_layers);
  const int64_t length = static_cast<int64_t>(sequence.tokens.size());
  const int64_t pending = static_cast<int64_t>(sequence.pending.size());
  const int64_t n = static_cast<int64_t>(request.tokens.size());
  std::vector<float> x;
  if (draft != nullptr && draft->exit_layer < config_.num_layers) {
    // Layers [0, exit) only: the tokens wait, pending, after the earlier pending ones.
    const size_t exit = static_cast<size_t>(draft->exit_layer);
    model_->embed(request.tokens, x);
    model_->run_layers(sequence.state, 0, exit, length + pending, n, x);
    sequence.pending_exit = draft->exit_layer;
    sequence.pending.insert(sequence.pending.end(), request.tokens.begin(), request.tokens.end());
    sequence.pending_hidden.insert(sequence.pending_hidden.end(), x.begin(), x.end());
  } else {
    // Every layer; pending tokens (a full pass begins with them) resume at their exit layer.
    const int64_t resumed = draft == nullptr ? pending : 0;
    std::vector<float> fresh;
    model_->embed(request.tokens.subspan(static_cast<size_t>(resumed)), fresh);
    x = sequence.pending_hidden;
    x.resize(static_cast<size_t>(resumed) * C);
    if (resumed > 0) {
      model_->run_layers(sequence.state, static_cast<size_t>(sequence.pending_exit), layers, length, resumed, x);
    }
    model_->run_layers(sequence.state, 0, layers, length + resumed, n - resumed, fresh);
    x.insert(x.end(), fresh.begin(), fresh.end());
    sequence.tokens.insert(sequence.tokens.end(), request.tokens.begin(), request.tokens.end());
    sequence.state.position = static_cast<int64_t>(sequence.tokens.size());
    sequence.pending.clear();
    sequence.pending_hidden.clear();
    sequence.pending_exit = 0;
  }
  for (const int32_t row : request.logit_rows) {
    rows.insert(rows.end(), x.begin() + static_cast<std::ptrdiff_t>(static_cast<size_t>(row) * C),
                x.begin() + static_cast<std::ptrdiff_t>(static_cast<size_t>(row + 1) * C));
  }
}

void TttDecoder::head_logits(std::vector<float>& rows, const DraftHead* draft, std::vector<float>& logits) {
  const int64_t C = config_.hidden_size, vocab = config_.vocab_size;
  const int64_t n = static_cast<int64_t>(rows.size()) / C;
  if (draft == nullptr) {
    // The target's own norm and head, exactly as TttModel::forward computes them.
    logits.assign(static_cast<size_t>(n * vocab), 0.0f);
    model_->output_logits(rows, n, logits);
    return;
  }
  if (draft->exit_hidden != nullptr) *draft->exit_hidden = rows;
  const LowRankAdapter* adapter = draft->adapter;
  if (adapter != nullptr && !adapter->lens.empty()) {
    std::vector<float> mapped(rows.size());  // h + M h
    cpu::matmul(rows.data(), adapter->lens.data(), nullptr, mapped.data(), n, C, C, pool_);
    for (size_t i = 0; i < rows.size(); ++i) rows[i] += mapped[i];
  }
  const float* gain = draft->norm_gain.empty() ? model_->final_norm().data() : draft->norm_gain.data();
  cpu::rms_norm(rows.data(), gain, rows.data(), n, C, static_cast<float>(config_.rms_norm_eps), pool_);
  logits.assign(static_cast<size_t>(n * vocab), 0.0f);
  cpu::matmul(rows.data(), model_->lm_head().data(), nullptr, logits.data(), n, C, vocab, pool_);
  if (adapter != nullptr) {
    std::vector<float> down(static_cast<size_t>(n * adapter->rank)), up(logits.size());
    cpu::matmul(rows.data(), adapter->a.data(), nullptr, down.data(), n, C, adapter->rank, pool_);
    cpu::matmul(down.data(), adapter->b.data(), nullptr, up.data(), n, adapter->rank, vocab, pool_);
    for (size_t i = 0; i < logits.size(); ++i) logits[i] += adapter->scale * up[i];
  }
}

}  // namespace draftwise
