#!/usr/bin/env bash
# Round 14, run 3: entries of at most 32 tokens (max_sentence_len 32: long sentences cut into pieces, Quest-sized
# pages inside sentences) with the mean and the bound summaries and the paper's dense steps. New prefills (the sentence table differs), saved to the store as well.
set -euo pipefail
cd "$(dirname "$0")/../../.."
STORE=${SKV_QA_STORE:-$HOME/.cache/sentencekv/qa-store}
.venv/bin/skv eval qa --contexts 8k --limit 40 --policies full,sentence --budgets 1024 \
  --skv-opt max_sentence_len=32 \
  --variant "xs+qdense+sdense=exclude_sink:1" \
  --variant bound-xs=summary:bound,exclude_sink:1 \
  --variant "bound-xs+qdense+sdense=summary:bound,exclude_sink:1" \
  --store "$STORE" --out docs/bench/r14/qa-8k-msl32
