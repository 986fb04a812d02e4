#!/usr/bin/env bash
# Round 15: the default model split across two loopback RPC servers, stock full vs SentenceKV (sentence/1024), and
# both on one machine: decode ms/token, memory on each server, bytes per decode step (counting relays).
set -euo pipefail
cd "$(dirname "$0")/../../.."
.venv/bin/skv bench rpc --contexts "${CONTEXTS:-4k,8k}" --steps 16 --out docs/bench/r15/rpc
