#!/usr/bin/env bash
# Round 15: what the same-step selection costs per decode step, 4k and 32k, synthetic fill (skv bench scale),
# the default model, stock / lagged sentence / same-step sentence interleaved in one run.
set -euo pipefail
cd "$(dirname "$0")/../../.."
MODEL=$(.venv/bin/python -c 'from engine.models import default_model_path; print(default_model_path())')
.venv/bin/skv bench scale --model "$MODEL" --contexts 4k,32k --steps 8 --repeats 3 --policies sentence \
  --variant step=select_at:step --out docs/bench/r15/scale-step
