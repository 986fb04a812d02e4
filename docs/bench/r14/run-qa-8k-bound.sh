#!/usr/bin/env bash
# Round 14, run 2: the sink's keys left out of the vectors (exclude_sink), the bound summary (Quest's per-dimension
# key range), the paper's dense steps and a larger budget, on the prefills run 1 saved (no prefill: each window is
# restored from the store; sentence/1024 again checks the restore against run 1).
set -euo pipefail
cd "$(dirname "$0")/../../.."
STORE=${SKV_QA_STORE:-$HOME/.cache/sentencekv/qa-store}
.venv/bin/skv eval qa --contexts 8k --limit 40 --policies full,sentence --budgets 1024 \
  --variant xs=exclude_sink:1 \
  --variant "xs+qdense+sdense=exclude_sink:1" \
  --variant bound-xs=summary:bound,exclude_sink:1 \
  --variant "bound-xs+qdense+sdense=summary:bound,exclude_sink:1" \
  --variant "xs-2048+qdense+sdense=exclude_sink:1,budget:2048" \
  --store "$STORE" --out docs/bench/r14/qa-8k-bound
