#!/usr/bin/env bash
# Build the patched libllama with AddressSanitizer + UndefinedBehaviorSanitizer and run the native tests on it.
#   bash native/tools/sanitize.sh [pytest args]      (default: tests/test_native_*.py)
# Needs `make setup` first (it uses the patched source tree that native/build.py keeps in the cache dir).
# First build: ~5 min on 2 cores; later runs rebuild incrementally.
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE="${SKV_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sentencekv}"
TREE=$(ls -d "$CACHE"/src/*/tree 2>/dev/null | head -1)
[ -n "$TREE" ] || { echo "sanitize: no patched source tree under $CACHE/src: run make setup" >&2; exit 2; }
# the tree must carry the current native files
.venv/bin/python native/build.py >/dev/null
TREE=$(ls -td "$CACHE"/src/*/tree | head -1)
OUT="$CACHE/asan"
cmake -S "$TREE/vendor/llama.cpp" -B "$OUT" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_SHARED_LIBS=ON \
  -DLLAMA_BUILD_COMMON=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=OFF -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF \
  -DLLAMA_SANITIZE_ADDRESS=ON -DLLAMA_SANITIZE_UNDEFINED=ON >/dev/null
cmake --build "$OUT" --target llama -j "$(nproc)"
ASAN_LIB=$(gcc -print-file-name=libasan.so)
UBSAN_LIB=$(gcc -print-file-name=libubsan.so)
export LD_PRELOAD="$ASAN_LIB $UBSAN_LIB"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LLAMA_CPP_LIB_PATH="$OUT/bin"
if [ $# -eq 0 ]; then set -- tests/test_native_exactness.py tests/test_native_state.py tests/test_native_properties.py \
  tests/test_native_memory.py tests/test_native_sparse_output.py tests/test_session_repeat.py \
  tests/test_bench_scale.py -m "not slow" -k "not gemma"; fi
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
