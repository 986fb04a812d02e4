#!/usr/bin/env bash
# Round 14, run 2: the bound summary (Quest's per-dimension key range) and its combinations, on the prefills run 1
# saved (no prefill: each window restored from the store; sentence/1024 again checks the restore).
set -euo pipefail
cd "$(dirname "$0")/../../.."
STORE=${SKV_QA_STORE:-$HOME/.cache/sentencekv/qa-store}
.venv/bin/skv eval qa --contexts 8k --limit 40 --policies full,sentence --budgets 1024 \
  --variant bound=summary:bound \
  --variant "bound+qdense+sdense=summary:bound" \
  --variant bound-last=summary:bound,query:last \
  --variant bound-heads=summary:bound,gqa:heads \
  --variant "bound-2048+qdense+sdense=summary:bound,budget:2048" \
  --store "$STORE" --out docs/bench/r14/qa-8k-bound
