// A TTT target behind the Decoder interface (target/ttt_decoder.h): its passes equal the
// model's own; rollback to any length, before or after a mini-batch boundary, leaves exactly
// the state plain decoding has there; and greedy speculative decoding with n-gram and
// early-exit drafters equals plain greedy decoding, with rejections on both sides of
// mini-batch boundaries; all of it for hybrid models too (attention layers between TTT layers).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <set>

#include "draft/early_exit_drafter.h"
#include "draft/ngram_drafter.h"
#include "engine/generation.h"
#include "kernels/random.h"
#include "target/ttt_decoder.h"
#include "tests/support/test_paths.h"

namespace draftwise {
namespace {

std::string fixture(const std::string& name) {
  for (const char* group : {"ttt_official", "ttt"}) {
    const auto folder = testing::fixtures_dir() / group / name;
    if (std::filesystem::exists(folder)) return folder.string();
  }
  ADD_FAILURE() << "no TTT fixture " << name;
  return {};
}

std::unique_ptr<TttModel> load_model(const std::string& name) {
  Expected<std::unique_ptr<TttModel>> model = TttModel::load(fixture(name));
  EXPECT_TRUE(model.ok()) << model.error().message;
  return model.ok() ? std::move(*model) : nullptr;
}

std::unique_ptr<TttDecoder> load_decoder(const std::string& name) {
  Expected<std::unique_ptr<TttDecoder>> decoder = TttDecoder::create(load_model(name), TttDecoderOptions{1, 0});
  EXPECT_TRUE(decoder.ok()) << decoder.error().message;
  return decoder.ok() ? std::move(*decoder) : nullptr;
}

std::vector<int32_t> all_rows(size_t n) {
  std::vector<int32_t> rows(n);
  for (size_t i = 0; i < n; ++i) rows[i] = static_cast<int32_t>(i);
  return rows;
}

// Largest |a − b| over the largest |b|.
double relative_difference(std::span<const float> a, std::span<const float> b) {
  double worst = 0, largest = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, static_cast<double>(std::fabs(a[i] - b[i])));
    largest = std::max(largest, static_cast<double>(std::fabs(b[i])));
  }
  return worst / largest;
}

TEST(TttDecoder, PassesEqualTheModelsOwnForward) {
  for (const std::string name :
       {"linear_base", "mlp_base", "linear_preconv_gate_shareqk_mb4", "hybrid_mlp_shareqk_untied_mb4"}) {
    SCOPED_TRACE(name);
    auto decoder = load_decoder(name);
    const TttModel& model = decoder->model();
    EXPECT_EQ(decoder->config().architecture, Architecture::ttt);
    std::vector<int32_t> tokens(37);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>((i * 7 + 3) % 100);
    TttState state = model.initial_state();
    std::vector<float> want;
    ASSERT_TRUE(model.forward(state, tokens, want).ok());
    // A prompt pass of 20 and then one token at a time: the same chunks as the model's.
    const SequenceId id = decoder->create_sequence();
    std::vector<float> got, logits;
    const std::vector<int32_t> rows = all_rows(20);
    const ForwardRequest prompt{id, std::span(tokens).first(20), rows};
    ASSERT_TRUE(decoder->forward(std::span(&prompt, 1), logits).ok());
    got = logits;
    for (size_t i = 20; i < tokens.size(); ++i) {
      const int32_t row = 0;
      const ForwardRequest step{id, std::span(tokens).subspan(i, 1), std::span(&row, 1)};
      ASSERT_TRUE(decoder->forward(std::span(&step, 1), logits).ok());
      got.insert(got.end(), logits.begin(), logits.end());
    }
    EXPECT_EQ(decoder->sequence_length(id), 37);
    // The model fed 37 at once runs [0, 16) and [16, 32) in the dual form, the decoder [16, 20)
    // and the rest in the primal form: equal within the dual form's rounding.
    EXPECT_LE(relative_difference(got, want), 1e-5);
  }
}

// Random passes and rollbacks: after each, the next token's logits equal those of a fresh
// sequence fed the same tokens. Rollbacks land before, at and after mini-batch boundaries,
// inside and beyond the last pass.
TEST(TttDecoder, RollbackToAnyLengthEqualsPlainDecoding) {
  for (const std::string name : {"linear_base", "mlp_shareqk_gate_mb8", "linear_preconv_gate_shareqk_mb4",
                                 "hybrid_linear_gqa_preconv_gate_mb8", "hybrid_mlp_shareqk_untied_mb4"}) {
    SCOPED_TRACE(name);
    auto decoder = load_decoder(name);
    const int64_t b = decoder->model().config().mini_batch_size;
    const int32_t vocab = static_cast<int32_t>(decoder->config().vocab_size);
    Rng rng(17);
    const SequenceId id = decoder->create_sequence();
    std::vector<int32_t> kept;
    std::set<int64_t> offsets;  // new lengths mod b after a rollback
    std::vector<float> logits;
    const int32_t last = 0;
    for (int round = 0; round < 40; ++round) {
      std::vector<int32_t> fresh(1 + rng.below(6));
      for (int32_t& token : fresh) token = static_cast<int32_t>(rng.below(static_cast<uint64_t>(vocab)));
      const ForwardRequest pass{id, fresh, std::span(&last, 1)};
      ASSERT_TRUE(decoder->forward(std::span(&pass, 1), logits).ok());
      kept.insert(kept.end(), fresh.begin(), fresh.end());
      const int64_t length = static_cast<int64_t>(kept.size());
      // Mostly inside the last pass (speculation), now and then further back.
      const int64_t back = round % 7 == 6 ? static_cast<int64_t>(rng.below(static_cast<uint64_t>(length)))
                                          : static_cast<int64_t>(rng.below(fresh.size() + 1));
      const int64_t target = length - back;
      ASSERT_TRUE(decoder->truncate_sequence(id, target).ok());
      kept.resize(static_cast<size_t>(target));
      offsets.insert(target % b);
      ASSERT_EQ(decoder->sequence_length(id), target);

      const int32_t probe = static_cast<int32_t>(rng.below(static_cast<uint64_t>(vocab)));
      const ForwardRequest next{id, std::span(&probe, 1), std::span(&last, 1)};
      ASSERT_TRUE(decoder->forward(std::span(&next, 1), logits).ok());
      ASSERT_TRUE(decoder->truncate_sequence(id, target).ok());
      const std::vector<float> got = logits;
      // The fresh sequence, one token at a time (the primal form throughout).
      auto plain = load_decoder(name);
      const SequenceId p = plain->create_sequence();
      std::vector<int32_t> sequence = kept;
      sequence.push_back(probe);
      for (size_t i = 0; i < sequence.size(); ++i) {
        const ForwardRequest step{p, std::span(sequence).subspan(i, 1), std::span(&last, 1)};
        ASSERT_TRUE(plain->forward(std::span(&step, 1), logits).ok());
      }
      ASSERT_LE(relative_difference(got, logits), 1e-5) << "round " << round << ", length " << target;
    }
    EXPECT_GT(decoder->restores(), 0);
    EXPECT_GT(decoder->recomputes(), 0);
    EXPECT_GE(offsets.size(), static_cast<size_t>(std::min<int64_t>(b, 4)));  // both sides of boundaries
    EXPECT_TRUE(offsets.contains(0));
  }
}

// Forwards everything to a TTT decoder, recording each verification pass's start and length
// and the rollbacks after it.
class RecordingDecoder final : public Decoder {
 public:
  explicit RecordingDecoder(Decoder& inner) : inner_(inner) {}
  struct Rollback {
    int64_t start, end, kept;  // the pass covered [start, end); the sequence kept `kept` tokens
  };
  std::vector<Rollback> rollbacks;

  const ModelConfig& config() const override { return inner_.config(); }
  int64_t context_length() const override { return inner_.context_length(); }
  std::string device_name() const override { return inner_.device_name(); }
  SequenceId create_sequence() override { return inner_.create_sequence(); }
  void release_sequence(SequenceId sequence) override { inner_.release_sequence(sequence); }
  int64_t sequence_length(SequenceId sequence) const override { return inner_.sequence_length(sequence); }
  Status truncate_sequence(SequenceId sequence, int64_t length) override {
    if (length < inner_.sequence_length(sequence)) rollbacks.push_back({last_start_, last_end_, length});
    return inner_.truncate_sequence(sequence, length);
  }
  CacheUsage cache_usage() const override { return inner_.cache_usage(); }
  Status forward(std::span<const ForwardRequest> batch, std::vector<float>& logits) override {
    if (batch.size() == 1) last_start_ = inner_.sequence_length(batch[0].sequence);
    DW_TRY(inner_.forward(batch, logits));
    if (batch.size() == 1) last_end_ = inner_.sequence_length(batch[0].sequence);
    return {};
  }
  Status forward_draft(std::span<const ForwardRequest> batch, const DraftHead& head,
                       std::vector<float>& logits) override {
    return inner_.forward_draft(batch, head, logits);
  }
  int64_t pending_tokens(SequenceId sequence) const override { return inner_.pending_tokens(sequence); }
  Expected<std::vector<float>> final_norm_weight() const override { return inner_.final_norm_weight(); }

 private:
  Decoder& inner_;
  int64_t last_start_ = 0, last_end_ = 0;
};

TEST(TttSpeculation, GreedyWithNgramAndEarlyExitDraftersEqualsPlainGreedy) {
  int before_boundary = 0, after_boundary = 0;
  int64_t drafted = 0, accepted = 0;
  for (const std::string name : {"linear_base", "mlp_base", "linear_gate_shareqk_untied_mb8", "mlp_shareqk_gate_mb8",
                                 "hybrid_linear_gqa_preconv_gate_mb8", "hybrid_mlp_shareqk_untied_mb4"}) {
    SCOPED_TRACE(name);
    auto target = load_decoder(name);
    RecordingDecoder recording(*target);
    const int64_t b = target->model().config().mini_batch_size;
    GenerationOptions greedy;
    greedy.max_tokens = 48;
    greedy.sampling.temperature = 0.0;
    std::vector<int32_t> long_prompt(37);  // past two mini-batches of 16
    for (size_t i = 0; i < long_prompt.size(); ++i) long_prompt[i] = static_cast<int32_t>((i * 37 + 11) % 120);
    for (const std::vector<int32_t>& prompt :
         {std::vector<int32_t>{1, 40, 41, 42}, std::vector<int32_t>{5, 6, 7, 5, 6, 7, 5, 6, 7, 5, 6}, long_prompt}) {
      const auto plain = generate(*target, nullptr, prompt, greedy);
      ASSERT_TRUE(plain.ok()) << plain.error().message;
      std::vector<std::unique_ptr<Drafter>> drafters;
      drafters.push_back(std::move(NgramDrafter::create(1)).value());
      drafters.push_back(std::move(NgramDrafter::create(2)).value());
      drafters.push_back(std::move(EarlyExitDrafter::create(recording, 1)).value());
      for (const std::unique_ptr<Drafter>& drafter : drafters) {
        for (const int k : {3, 5}) {
          SCOPED_TRACE(drafter->name() + " k " + std::to_string(k));
          GenerationOptions options = greedy;
          options.drafter = drafter.get();
          options.draft_length = DraftLength::fixed(k);
          const auto speculated = generate(recording, nullptr, prompt, options);
          ASSERT_TRUE(speculated.ok()) << speculated.error().message;
          EXPECT_EQ(speculated->token_ids, plain->token_ids);
          drafted += speculated->stats.speculation.draft_tokens;
          accepted += speculated->stats.speculation.accepted_tokens;
        }
      }
    }
    // Rejected passes that crossed a mini-batch end: kept before it, or at or after it.
    for (const RecordingDecoder::Rollback& r : recording.rollbacks) {
      const int64_t boundary = (r.start / b + 1) * b;
      if (boundary >= r.end) continue;
      (r.kept < boundary ? before_boundary : after_boundary) += 1;
    }
  }
  EXPECT_GT(accepted, 0);
  EXPECT_LT(accepted, drafted);
  EXPECT_GT(before_boundary, 0);
  EXPECT_GT(after_boundary, 0);
  std::printf("drafted %lld, accepted %lld; rejections kept before a mini-batch end %d, at or after it %d\n",
              static_cast<long long>(drafted), static_cast<long long>(accepted), before_boundary, after_boundary);
}

}  // namespace
}  // namespace draftwise
