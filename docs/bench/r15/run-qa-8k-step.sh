#!/usr/bin/env bash
# Round 15, run 1: the same-step selection (select_at step / step_sentence: each layer's entries chosen inside the
# graph from the step's own query) beside the default and the paper's dense steps, entries of up to 128 tokens.
# Prefills saved to the store (a later run restores them).
set -euo pipefail
cd "$(dirname "$0")/../../.."
STORE=${SKV_QA_STORE:-$HOME/.cache/sentencekv/qa-store}
.venv/bin/skv eval qa --contexts 8k --limit 40 --policies full,sentence,window --budgets 1024 \
  --variant step=select_at:step \
  --variant step-sent=select_at:step_sentence \
  --variant "step+qdense+sdense=select_at:step" \
  --variant "step-sent+qdense+sdense=select_at:step_sentence" \
  --variant step-xs=select_at:step,exclude_sink:1 \
  --store "$STORE" --out docs/bench/r15/qa-8k-step
