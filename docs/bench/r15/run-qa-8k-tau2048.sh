#!/usr/bin/env bash
# Round 15, run 3: the same-step selection with the paper's dense steps at tau 2048, on the stored prefills.
set -euo pipefail
cd "$(dirname "$0")/../../.."
STORE=${SKV_QA_STORE:-$HOME/.cache/sentencekv/qa-store}
.venv/bin/skv eval qa --contexts 8k --limit 40 --policies full --budgets 2048 \
  --variant "tau2048+qdense+sdense=budget:2048" \
  --variant "step-tau2048+qdense+sdense=select_at:step,budget:2048" \
  --variant "step-tau2048=select_at:step,budget:2048" \
  --store "$STORE" --out docs/bench/r15/qa-8k-tau2048
