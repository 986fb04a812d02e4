#!/usr/bin/env bash
# Round 15, run 2: the same-step selection on entries of at most 32 tokens (long sentences cut into Quest-sized
# pieces), with the mean and the bound summaries. New prefills (the sentence table differs), saved to the store.
set -euo pipefail
cd "$(dirname "$0")/../../.."
STORE=${SKV_QA_STORE:-$HOME/.cache/sentencekv/qa-store}
.venv/bin/skv eval qa --contexts 8k --limit 40 --policies full,sentence --budgets 1024 \
  --skv-opt max_sentence_len=32 \
  --variant step=select_at:step \
  --variant step-xs-bound=select_at:step,exclude_sink:1,summary:bound \
  --variant "step-xs-bound+qdense+sdense=select_at:step,exclude_sink:1,summary:bound" \
  --variant step-sent-xs-bound=select_at:step_sentence,exclude_sink:1,summary:bound \
  --store "$STORE" --out docs/bench/r15/qa-8k-step-msl32
