#!/usr/bin/env bash
# Configure and compile the patched libllama with the CUDA backend on a machine without a GPU.
#   bash native/tools/cuda_build.sh [CUBLAS_ROOT]
# CUBLAS_ROOT: an unpacked `nvidia-cublas` wheel's nvidia/cu13 folder (lib/ + include/); the CUDA toolkit here has no
# cuBLAS (native/README.md, "CUDA"). Get one with:
#   pip download nvidia-cublas==13.0.2.14 --no-deps -d /tmp/cublas && unzip -q /tmp/cublas/*.whl -d /tmp/cublas/w
# On a GPU machine with the full toolkit, `python native/build.py --cuda` builds the wheel instead.
# ~144 CUDA objects: 25-35 min with -j2 here. Needs `make setup` first (the patched source tree in the cache dir).
set -euo pipefail
cd "$(dirname "$0")/../.."
CUBLAS="${1:-/tmp/cublas/w/nvidia/cu13}"
[ -f "$CUBLAS/lib/libcublas.so" ] || { echo "cuda_build: no cuBLAS under $CUBLAS (see the header)" >&2; exit 2; }
CACHE="${SKV_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sentencekv}"
.venv/bin/python native/build.py >/dev/null  # the tree must carry the current native files
TREE=$(ls -td "$CACHE"/src/*/tree | head -1)
OUT="$CACHE/cuda"
cmake -S "$TREE/vendor/llama.cpp" -B "$OUT" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
  -DLLAMA_BUILD_COMMON=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=OFF -DGGML_NATIVE=OFF -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_NO_VMM=ON \
  -DCUDA_cublas_LIBRARY="$CUBLAS/lib/libcublas.so" -DCUDA_cublasLt_LIBRARY="$CUBLAS/lib/libcublasLt.so" \
  -DCMAKE_CUDA_FLAGS="-I$CUBLAS/include" -DCMAKE_CXX_FLAGS="-I$CUBLAS/include" -DCMAKE_C_FLAGS="-I$CUBLAS/include"
cmake --build "$OUT" --target llama -j "${JOBS:-$(nproc)}"
ls -la "$OUT/bin/"libggml-cuda.so* "$OUT/bin/"libllama.so*
nm -D "$OUT/bin/libllama.so" | grep -c " T llama_skv_" | sed 's/^/cuda_build: llama_skv_ symbols exported: /'
