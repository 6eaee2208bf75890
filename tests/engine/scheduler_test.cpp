// The scheduler of continuous batching on the CPU reference: requests that join a running
// batch at different steps, with mixed prefill and decode under a small token budget, with and
// without drafting, each get exactly what generate() gives them alone; a run preempted and
// resumed goes on as if nothing happened; cancellation frees the cache; the queue refuses
// what it cannot hold; speculation backs off above its batch size.
#include <gtest/gtest.h>

#include <map>

#include "draft/ngram_drafter.h"
#include "engine/request_run.h"
#include "engine/scheduler.h"
#include "target/checkpoint.h"
#include "target/cpu_decoder.h"
#include "tests/support/test_paths.h"

namespace draftwise {
namespace {

std::unique_ptr<CpuDecoder> tiny_decoder(int64_t max_cache_blocks = 0) {
  auto checkpoint = Checkpoint::open((testing::fixtures_dir() / "models/llama_tied").string());
  EXPECT_TRUE(checkpoint.ok());
  CpuDecoderOptions options;
  options.max_cache_blocks = max_cache_blocks;
  auto decoder = CpuDecoder::load(*checkpoint, options);
  EXPECT_TRUE(decoder.ok());
  return std::move(decoder).value();
}

std::vector<int32_t> prompt_of(int seed, int length) {
  std::vector<int32_t> prompt;
  for (int i = 0; i < length; ++i) prompt.push_back(static_cast<int32_t>((seed * 7 + i * 13 + i * i) % 60 + 1));
  return prompt;
}

GenerationOptions options_for(int i, Drafter* drafter) {
  GenerationOptions options;
  options.max_tokens = 6 + i % 5;
  options.sampling.temperature = i % 3 == 2 ? 0.8 : 0.0;  // some sampled, seeded
  options.sampling.seed = 100 + static_cast<uint64_t>(i);
  options.drafter = i % 2 == 0 ? drafter : nullptr;
  options.draft_length = DraftLength::fixed(3);
  return options;
}

struct Outcome {
  std::vector<int32_t> tokens;
  FinishReason reason = FinishReason::length;
  bool ok = false;
};

TEST(Scheduler, RequestsJoiningAtAnyStepGetWhatTheyGetAlone) {
  auto decoder = tiny_decoder();
  auto ngram = std::move(NgramDrafter::create(2)).value();
  constexpr int kRequests = 9;
  std::vector<std::vector<int32_t>> prompts;
  std::vector<Expected<GenerationResult>> alone;
  for (int i = 0; i < kRequests; ++i) {
    prompts.push_back(prompt_of(i, 3 + (i * 5) % 23));
    alone.push_back(generate(*decoder, nullptr, prompts.back(), options_for(i, ngram.get())));
    ASSERT_TRUE(alone.back().ok()) << alone.back().error().message;
  }
  SchedulerOptions scheduling;
  scheduling.max_running = 4;
  scheduling.token_budget = 7;  // long prompts take several steps, beside others' decoding
  Scheduler scheduler(*decoder, nullptr, scheduling, {});
  std::map<int, Outcome> outcomes;
  std::vector<int32_t> streamed_of_last;
  const auto submit = [&](int i) {
    ScheduledRequest request;
    request.prompt = prompts[static_cast<size_t>(i)];
    request.options = options_for(i, ngram.get());
    if (i == kRequests - 1) request.on_output = [&](const OutputEvent& event) { streamed_of_last.push_back(event.token); };
    request.on_done = [&, i](Expected<GenerationResult> result) {
      Outcome& outcome = outcomes[i];
      outcome.ok = result.ok();
      if (result.ok()) {
        outcome.tokens = result->token_ids;
        outcome.reason = result->finish_reason;
      }
    };
    ASSERT_TRUE(std::holds_alternative<TicketId>(scheduler.submit(std::move(request))));
  };
  // Two now, the rest one every other step.
  submit(0);
  submit(1);
  int next = 2;
  for (int steps = 0; steps < 2000 && static_cast<int>(outcomes.size()) < kRequests; ++steps) {
    if (next < kRequests && steps % 2 == 1) submit(next++);
    scheduler.step();
  }
  ASSERT_EQ(static_cast<int>(outcomes.size()), kRequests);
  for (int i = 0; i < kRequests; ++i) {
    SCOPED_TRACE(i);
    ASSERT_TRUE(outcomes[i].ok);
    EXPECT_EQ(outcomes[i].tokens, alone[static_cast<size_t>(i)]->token_ids);
    EXPECT_EQ(outcomes[i].reason, alone[static_cast<size_t>(i)]->finish_reason);
  }
  EXPECT_EQ(streamed_of_last, alone.back()->token_ids);
  const SchedulerCounters counters = scheduler.counters();
  EXPECT_EQ(counters.finished, kRequests);
  EXPECT_EQ(counters.running, 0);
  EXPECT_EQ(counters.cache.used_blocks, 0);
}

TEST(Scheduler, APreemptedRunResumesWhereItWas) {
  auto decoder = tiny_decoder();
  auto ngram = std::move(NgramDrafter::create(2)).value();
  for (const bool sampled : {false, true}) {
    SCOPED_TRACE(sampled);
    GenerationOptions options = options_for(0, ngram.get());
    options.max_tokens = 14;
    options.sampling.temperature = sampled ? 0.9 : 0.0;
    const std::vector<int32_t> prompt = prompt_of(3, 11);
    const Expected<GenerationResult> alone = generate(*decoder, nullptr, prompt, options);
    ASSERT_TRUE(alone.ok());
    RequestRun run(*decoder, nullptr, prompt, options, {});
    ASSERT_TRUE(run.check().ok());
    ASSERT_TRUE(run.start(/*prefill_now=*/false).ok());
    RequestRun* const runs[] = {&run};
    int steps = 0;
    while (!run.finished()) {
      ASSERT_TRUE(step_runs(*decoder, runs, StepLimits{4, 16}).ok());
      // Preempted twice: in the middle of the prompt, and after a few tokens.
      if (++steps == 2 || steps == 6) {
        run.preempt();
        EXPECT_EQ(decoder->cache_usage().used_blocks, 0);
        ASSERT_TRUE(run.start(/*prefill_now=*/false).ok());
      }
    }
    EXPECT_EQ(run.take_result().token_ids, alone->token_ids);
  }
}

TEST(Scheduler, WhenTheCacheIsShortRequestsWaitOrArePreemptedAndStillGetTheirTokens) {
  auto unlimited = tiny_decoder();
  auto ngram = std::move(NgramDrafter::create(2)).value();
  constexpr int kRequests = 6;
  std::vector<std::vector<int32_t>> prompts;
  std::vector<GenerationOptions> options;
  std::vector<Expected<GenerationResult>> alone;
  for (int i = 0; i < kRequests; ++i) {
    prompts.push_back(prompt_of(i, 20 + i * 3));
    options.push_back(options_for(i, ngram.get()));
    options.back().max_tokens = 40;
    alone.push_back(generate(*unlimited, nullptr, prompts.back(), options.back()));
    ASSERT_TRUE(alone.back().ok());
  }
  // 14 blocks of 16 positions: room for about three of these requests at once.
  auto decoder = tiny_decoder(14);
  SchedulerOptions scheduling;
  scheduling.token_budget = 16;
  Scheduler scheduler(*decoder, nullptr, scheduling, {});
  std::map<int, Expected<GenerationResult>> outcomes;
  for (int i = 0; i < kRequests; ++i) {
    ScheduledRequest request;
    request.prompt = prompts[static_cast<size_t>(i)];
    request.options = options[static_cast<size_t>(i)];
    request.on_done = [&, i](Expected<GenerationResult> result) { outcomes.emplace(i, std::move(result)); };
    ASSERT_TRUE(std::holds_alternative<TicketId>(scheduler.submit(std::move(request))));
  }
  int64_t most_blocks = 0;
  for (int steps = 0; steps < 5000 && scheduler.step(); ++steps) {
    most_blocks = std::max(most_blocks, decoder->cache_usage().used_blocks);
  }
  ASSERT_EQ(static_cast<int>(outcomes.size()), kRequests);
  for (int i = 0; i < kRequests; ++i) {
    SCOPED_TRACE(i);
    ASSERT_TRUE(outcomes.at(i).ok()) << outcomes.at(i).error().message;
    EXPECT_EQ(outcomes.at(i)->token_ids, alone[static_cast<size_t>(i)]->token_ids);
  }
  EXPECT_LE(most_blocks, 14);
  EXPECT_GT(scheduler.counters().preemptions, 0);
  EXPECT_EQ(decoder->cache_usage().used_blocks, 0);
}

TEST(Scheduler, CancelEndsARequestAndFreesItsCache) {
  auto decoder = tiny_decoder();
  Scheduler scheduler(*decoder, nullptr, {}, {});
  std::optional<Expected<GenerationResult>> result;
  ScheduledRequest request;
  request.prompt = prompt_of(1, 40);
  request.options.max_tokens = 200;
  request.options.sampling.temperature = 0;
  request.on_done = [&](Expected<GenerationResult> outcome) { result = std::move(outcome); };
  const auto ticket = scheduler.submit(std::move(request));
  ASSERT_TRUE(std::holds_alternative<TicketId>(ticket));
  for (int i = 0; i < 5; ++i) scheduler.step();
  EXPECT_GT(decoder->cache_usage().used_blocks, 0);
  scheduler.cancel(std::get<TicketId>(ticket));
  scheduler.step();
  ASSERT_TRUE(result.has_value());
  ASSERT_TRUE(result->ok());
  EXPECT_EQ((*result)->finish_reason, FinishReason::cancelled);
  EXPECT_GT((*result)->token_ids.size(), 0u);
  EXPECT_EQ(decoder->cache_usage().used_blocks, 0);
  EXPECT_EQ(scheduler.counters().cancelled, 1);
}

TEST(Scheduler, RefusesBadRequestsAFullQueueAndAfterStop) {
  auto decoder = tiny_decoder();
  SchedulerOptions scheduling;
  scheduling.max_running = 1;
  scheduling.max_waiting = 1;
  Scheduler scheduler(*decoder, nullptr, scheduling, {});
  const auto make = [](int64_t max_tokens) {
    ScheduledRequest request;
    request.prompt = prompt_of(2, 5);
    request.options.max_tokens = max_tokens;
    return request;
  };
  const auto bad = scheduler.submit(make(0));
  ASSERT_TRUE(std::holds_alternative<Scheduler::Refused>(bad));
  EXPECT_EQ(std::get<Scheduler::Refused>(bad).kind, Scheduler::Refusal::invalid);
  EXPECT_NE(std::get<Scheduler::Refused>(bad).message.find("max_tokens"), std::string::npos);
  EXPECT_TRUE(std::holds_alternative<TicketId>(scheduler.submit(make(4))));  // a running place
  EXPECT_TRUE(std::holds_alternative<TicketId>(scheduler.submit(make(4))));  // a queue place
  const auto full = scheduler.submit(make(4));
  ASSERT_TRUE(std::holds_alternative<Scheduler::Refused>(full));
  EXPECT_EQ(std::get<Scheduler::Refused>(full).kind, Scheduler::Refusal::queue_full);
  scheduler.stop(/*cancel_held=*/false);
  const auto stopped = scheduler.submit(make(4));
  ASSERT_TRUE(std::holds_alternative<Scheduler::Refused>(stopped));
  EXPECT_EQ(std::get<Scheduler::Refused>(stopped).kind, Scheduler::Refusal::stopped);
  scheduler.run();  // returns once the two held requests have run to their end
  EXPECT_EQ(scheduler.counters().finished, 2);
}

TEST(Scheduler, SpeculationBacksOffAboveItsBatchSize) {
  auto decoder = tiny_decoder();
  auto ngram = std::move(NgramDrafter::create(1)).value();
  SchedulerOptions scheduling;
  scheduling.speculation_max_batch = 2;
  Scheduler scheduler(*decoder, nullptr, scheduling, {});
  std::vector<GenerationResult> results;
  for (int i = 0; i < 3; ++i) {
    ScheduledRequest request;
    request.prompt = prompt_of(i, 8);
    request.options.max_tokens = 10;
    request.options.sampling.temperature = 0;
    request.options.drafter = ngram.get();
    request.on_done = [&](Expected<GenerationResult> outcome) { results.push_back(std::move(*outcome)); };
    ASSERT_TRUE(std::holds_alternative<TicketId>(scheduler.submit(std::move(request))));
  }
  while (scheduler.step()) {
  }
  ASSERT_EQ(results.size(), 3u);
  EXPECT_GT(scheduler.counters().speculation_off_steps, 0);
  for (int i = 0; i < 3; ++i) {
    GenerationOptions options;
    options.max_tokens = 10;
    options.sampling.temperature = 0;
    const Expected<GenerationResult> alone = generate(*decoder, nullptr, prompt_of(i, 8), options);
    ASSERT_TRUE(alone.ok());
    bool found = false;
    for (const GenerationResult& result : results) found = found || result.token_ids == alone->token_ids;
    EXPECT_TRUE(found) << i;
  }
}

}  // namespace
}  // namespace draftwise
