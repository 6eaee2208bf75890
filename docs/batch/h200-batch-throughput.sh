#!/usr/bin/env bash
# On a GPU machine, from the repository root, with the default model in models/: builds
# draftwise and times `draftwise batch` over the 240 dev prompts (first turn, as chat
# messages, greedy, 128 new tokens) at --parallel 1, 16, 64, and 16 and 64 with n-gram
# drafting; counts the outputs identical to --parallel 1's. Work files go to /tmp.
set -u
scripts/gpu_build.sh > /dev/null || exit 1
python3 -c "
import json
for line in open('data/spec_bench/question_dev.jsonl'):
    q = json.loads(line)
    print(json.dumps({'id': q['question_id'], 'messages': [{'role': 'user', 'content': q['turns'][0]}]}))
" > /tmp/in.jsonl
for spec in "1|" "16|" "64|" "16|--draft,ngram:3" "64|--draft,ngram:3"; do
  parallel=${spec%%|*}; extra=${spec#*|}; extra=${extra//,/ }
  name="p${parallel}${extra:+-ngram}"
  rm -f /tmp/out-$name.jsonl
  start=$(date +%s.%N)
  build-gpu/draftwise batch --model models/SmolLM2-135M-Instruct.Q4_1.gguf --input /tmp/in.jsonl \
    --output /tmp/out-$name.jsonl --device cuda --parallel $parallel --max-tokens 128 --temperature 0 $extra \
    2> /tmp/err-$name.log
  rc=$?; end=$(date +%s.%N)
  python3 -c "
import json
rows = {json.loads(l)['id']: json.loads(l) for l in open('/tmp/out-$name.jsonl')}
base = {json.loads(l)['id']: json.loads(l) for l in open('/tmp/out-p1.jsonl')}
ok = [r for r in rows.values() if 'text' in r]
comp = sum(r['usage']['completion_tokens'] for r in ok)
same = sum(1 for i, r in rows.items() if 'text' in r and i in base and base[i].get('text') == r['text'])
wall = $end - $start
print(f'$name rc $rc lines {len(rows)} ok {len(ok)} completion {comp} wall {wall:.2f} s -> {comp / wall:.0f} completion tok/s; identical to p1: {same}/{len(rows)}')
"
  tail -n 1 /tmp/err-$name.log
done
