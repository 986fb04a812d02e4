#!/usr/bin/env bash
# Round 15, run 2: the Gaussian-mass summary (summary=gauss: log n + s q.m + s^2/2 q^2.s2) and the same-step
# selection (select_at step) beside the default and the paper's dense steps, entries of up to 128 tokens, on the
# prefills run 1 stored (the windows it had not reached are prefilled and stored here).
set -euo pipefail
cd "$(dirname "$0")/../../.."
STORE=${SKV_QA_STORE:-$HOME/.cache/sentencekv/qa-store}
.venv/bin/skv eval qa --contexts 8k --limit 40 --policies full,sentence --budgets 1024 \
  --variant step=select_at:step \
  --variant "step+qdense+sdense=select_at:step" \
  --variant gauss=summary:gauss \
  --variant gauss-step=summary:gauss,select_at:step \
  --variant "gauss+qdense+sdense=summary:gauss" \
  --variant "gauss-step+qdense+sdense=summary:gauss,select_at:step" \
  --variant gauss-xs=summary:gauss,exclude_sink:1 \
  --store "$STORE" --out docs/bench/r15/qa-8k-gauss
