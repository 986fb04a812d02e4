#!/usr/bin/env bash
# Round 15: the same at tau 2048 (the budget where step reaches KL 0.044).
set -euo pipefail
cd "$(dirname "$0")/../../.."
MODEL=$(.venv/bin/python -c 'from engine.models import default_model_path; print(default_model_path())')
.venv/bin/skv bench scale --model "$MODEL" --contexts 4k,32k --steps 8 --repeats 3 --policies sentence --budget 2048 \
  --variant step=select_at:step --out docs/bench/r15/scale-step-2048
