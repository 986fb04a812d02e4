#!/usr/bin/env bash
# Round 13: the diagnosis and the levers on the 40-question set at 8k, one prefill per window (see BENCHMARKS.md)
set -euo pipefail
cd "$(dirname "$0")/../../.."
.venv/bin/skv eval qa --contexts 8k --limit 40 --policies full,sentence,window --budgets 1024 \
  --variant or-tok=oracle:tokens --variant or-sent=oracle:sentences \
  --variant q-last=query:last --variant gqa-max=gqa:max --variant gqa-heads=gqa:heads \
  --variant dense1=dense_layers:1 --variant dense2=dense_layers:2 --variant dense4=dense_layers:4 \
  --variant edge-skip=edge:skip --variant nb1=neighbours:1 \
  --variant "dense-steps+qdense+sdense=" \
  --variant heads-d2-nb1=gqa:heads,dense_layers:2,neighbours:1 \
  --trace sentence/1024,or-tok,gqa-heads,dense2 \
  --out docs/bench/r13/qa-8k-levers
