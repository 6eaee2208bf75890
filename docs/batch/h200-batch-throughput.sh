#!/usr/bin/env bash
# Device call B for batch throughput: second half, assemble, check, build, 240 dev prompts.
set -u
cp .stage/part-ab /var/tmp/m/ && cat /var/tmp/m/part-a? > /var/tmp/m/model.gguf
echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  /var/tmp/m/model.gguf" | sha256sum -c || exit 1
mkdir -p models && cp /var/tmp/m/model.gguf models/SmolLM2-135M-Instruct.Q4_1.gguf
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
