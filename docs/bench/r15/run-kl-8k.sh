#!/usr/bin/env bash
# Round 15: KL(full || candidate) on walden at 8k (7000 tokens prefilled densely, 256 teacher-forced) for the
# round's levers: the same-step selection, the Gaussian-mass summary, both, beside the default and tau 2048.
set -euo pipefail
cd "$(dirname "$0")/../../.."
.venv/bin/skv eval kl --book walden.txt --n-ctx 8192 --prefix 7000 --n-eval 256 --budgets 1024,2048 \
  --policies sentence \
  --variant step=select_at:step --variant gauss=summary:gauss --variant gauss-step=summary:gauss,select_at:step \
  --out docs/bench/r15/kl-8k
