#!/bin/bash
cd /work/main
for spec in "48k sentence,full" "96k sentence" "16k sentence,full"; do
  set -- $spec
  echo "=== $1 start $(date +%T)"
  .venv/bin/skv eval passkey --lengths $1 --needles --needle-set distinct --depths 0.1,0.3,0.5,0.7,0.9 --policies $2 --prefill-cache /tmp/pk/cache --out docs/bench/r12/pk-$1-distinct 2>&1 | grep -v "^llama\|^load\|^print_info\|^\s*$"
  echo "=== $1 end $(date +%T)"
done
