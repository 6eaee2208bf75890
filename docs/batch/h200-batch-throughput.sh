#!/usr/bin/env bash
# On a GPU machine, from the repository root, with the default model in models/: builds
# draftwise and times `draftwise batch` over the 240 dev prompts (first turn, as chat
# messages, greedy, 128 new tokens) at --parallel 1, 16, 64, and 16 with n-gram drafting.
# Outputs go to $OUT (or /tmp).
set -u
OUT=${OUT:-/tmp}
scripts/gpu_build.sh || exit 1
python3 -c "
import json
for line in open('data/spec_bench/question_dev.jsonl'):
    q = json.loads(line)
    print(json.dumps({'id': q['question_id'], 'messages': [{'role': 'user', 'content': q['turns'][0]}]}))
" > /tmp/in.jsonl
wc -l /tmp/in.jsonl
build-gpu/draftwise version | head -5
for spec in "1|" "16|" "64|" "16|--draft,ngram:3"; do
  parallel=${spec%%|*}; extra=${spec#*|}; extra=${extra//,/ }
  name="p${parallel}${extra:+-ngram}"
  rm -f /tmp/out.jsonl
  start=$(date +%s.%N)
  build-gpu/draftwise batch --model models/SmolLM2-135M-Instruct.Q4_1.gguf --input /tmp/in.jsonl --output /tmp/out.jsonl \
    --device cuda --parallel $parallel --max-tokens 128 --temperature 0 $extra 2> /tmp/err.log
  rc=$?; end=$(date +%s.%N)
  python3 -c "
import json,sys
rows=[json.loads(l) for l in open('/tmp/out.jsonl')]
ok=[r for r in rows if 'text' in r]
comp=sum(r['usage']['completion_tokens'] for r in ok); prompt=sum(r['usage']['prompt_tokens'] for r in ok)
wall=$end-$start
print(f'$name rc $rc lines {len(rows)} ok {len(ok)} completion {comp} prompt {prompt} wall {wall:.2f} s -> {comp/wall:.1f} completion tok/s')
"
  tail -n 1 /tmp/err.log
  cp /tmp/out.jsonl $OUT/out-$name.jsonl
done
