#!/usr/bin/env bash
# Round 14, run 3: entries of at most 32 tokens (max_sentence_len 32: long sentences cut into pieces, Quest-sized
# pages inside sentences) with the mean and the bound summaries, the paper's dense steps, and the lagged oracle's
# ceiling at that granularity. New prefills (the sentence table differs), saved to the store as well.
set -euo pipefail
cd "$(dirname "$0")/../../.."
STORE=${SKV_QA_STORE:-$HOME/.cache/sentencekv/qa-store}
.venv/bin/skv eval qa --contexts 8k --limit 40 --policies full,sentence,window --budgets 1024 \
  --skv-opt max_sentence_len=32 \
  --variant "mean+qdense+sdense=" \
  --variant bound=summary:bound \
  --variant "bound+qdense+sdense=summary:bound" \
  --variant "bound-heads+qdense+sdense=summary:bound,gqa:heads" \
  --variant "or-sent-lag+qdense+sdense=oracle:sentences_lag" \
  --store "$STORE" --out docs/bench/r14/qa-8k-msl32
