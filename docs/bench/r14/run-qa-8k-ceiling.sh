#!/usr/bin/env bash
# Round 14, run 1: the ceiling of a lagged sentence choice, the paper's dense steps on it, and a larger budget, on the
# 40-question set at 8k. The prefills are saved to a store ($SKV_QA_STORE), so that later runs of other candidates on
# the same 21 windows skip them (see BENCHMARKS.md, round 14).
set -euo pipefail
cd "$(dirname "$0")/../../.."
STORE=${SKV_QA_STORE:-$HOME/.cache/sentencekv/qa-store}
.venv/bin/skv eval qa --contexts 8k --limit 40 --policies full,sentence,window --budgets 1024,2048 \
  --variant or-sent-lag=oracle:sentences_lag \
  --variant "or-sent-lag+qdense+sdense=oracle:sentences_lag" \
  --variant d512=score_distance:512 \
  --variant "d512+qdense+sdense=score_distance:512" \
  --variant "s2048+qdense+sdense=budget:2048" \
  --store "$STORE" --out docs/bench/r14/qa-8k-ceiling
