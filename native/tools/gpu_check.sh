#!/usr/bin/env bash
# One-command GPU check: build the patched libllama with CUDA (sm_90) from the packed, trimmed
# source, run the exactness and sparse-output checks with every layer offloaded, then a speed/memory table (stock
# vs SentenceKV at 4k/32k/64k on the synthetic 1B-shaped model, device bytes from CUDA's allocator).
#
#   here, once:    .venv/bin/python native/tools/gpu_pack.py        # writes .gpu/ (git-ignored), checks <= 64 MiB
#   on the GPU:    bash native/tools/gpu_check.sh                    # device tool: carry [".gpu"]
#   rehearsal:     bash native/tools/gpu_check.sh --cpu [--quick]    # the same steps on the CPU backend, here
#
# Needs on the machine: cmake, a C++ compiler, python3 with numpy, jinja2, typing_extensions, pytest and
# pytest-timeout (the CUDA image has them), nvcc for the CUDA build. Nothing is downloaded. Results go to $OUT
# (the device tool's folder) or /tmp/skv-gpu/out: gpu_check.log, gpu_check.json, gpu_check.md, checks.xml, scale.json.
# Options: --cpu (CPU backend, 0 layers offloaded), --quick (small shapes and contexts: the suite's rehearsal),
#          --build-only (stop after the build: times the CUDA build on a machine without a GPU),
#          --python PY (default python3; $SKV_GPU_PYTHON), --work DIR (default /tmp/skv-gpu; $SKV_GPU_WORK);
#          $SKV_GPU_PACK: the pack folder (default .gpu); $SKV_GPU_CMAKE: extra CMake flags (here, without a driver:
#          -DGGML_CUDA_NO_VMM=ON).
# Exit codes: 0 every check passed; 1 a check failed; 2 bad input (no .gpu pack, a missing tool).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
MODE=cuda QUICK=0 BUILD_ONLY=0 PY=${SKV_GPU_PYTHON:-python3} WORK=${SKV_GPU_WORK:-/tmp/skv-gpu}
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) MODE=cpu ;;
    --quick) QUICK=1 ;;
    --build-only) BUILD_ONLY=1 ;;
    --python) PY=$2; shift ;;
    --work) WORK=$2; shift ;;
    *) echo "gpu_check: unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done
PACK=${SKV_GPU_PACK:-$ROOT/.gpu}
[ -f "$PACK/llama.cpp.tar.gz" ] || { echo "gpu_check: no $PACK/llama.cpp.tar.gz: run native/tools/gpu_pack.py here first" >&2; exit 2; }
command -v cmake >/dev/null || { echo "gpu_check: cmake is missing" >&2; exit 2; }
if [ "$MODE" = cuda ]; then command -v nvcc >/dev/null || { echo "gpu_check: nvcc is missing (use --cpu to rehearse)" >&2; exit 2; }; fi
RESULTS=${OUT:-$WORK/out}
mkdir -p "$WORK" "$RESULTS"
exec > >(tee "$RESULTS/gpu_check.log") 2>&1
t_start=$(date +%s)
echo "gpu_check: mode $MODE, quick $QUICK, $(nproc) cores, python $($PY -c 'import sys; print(sys.version.split()[0])')"
[ "$MODE" = cuda ] && command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

# 1. the source: unpacked once per pack (the manifest's key names it)
key=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["key"][:16])' "$PACK/MANIFEST.json")
SRC=$WORK/src-$key
if [ ! -f "$SRC/.unpacked" ]; then
  rm -rf "$SRC"; mkdir -p "$SRC"; tar -xzf "$PACK/llama.cpp.tar.gz" -C "$SRC"; touch "$SRC/.unpacked"
fi

# 2. the library: only the llama target and what it links (ggml, ggml-cpu, ggml-cuda)
BUILD=$WORK/build-$MODE-$key
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
flags=(-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DLLAMA_BUILD_COMMON=OFF -DLLAMA_BUILD_TESTS=OFF
       -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_CURL=OFF
       -DGGML_NATIVE=OFF -DGGML_OPENMP=ON)
if [ "$MODE" = cuda ]; then
  flags+=(-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_FA_ALL_QUANTS=OFF)
  cuda_home=$(dirname "$(dirname "$(command -v nvcc)")")
  if [ ! -f "$cuda_home/include/cublas_v2.h" ]; then  # a toolkit without cuBLAS: the pip wheel's (native/README.md, "CUDA")
    cb=$($PY -c 'import nvidia, pathlib, sys; r = [p for d in nvidia.__path__ for p in pathlib.Path(d).glob("**/include/cublas_v2.h")]; print(r[0].parent.parent if r else "")' 2>/dev/null || true)
    [ -n "$cb" ] || { echo "gpu_check: no cuBLAS in $cuda_home nor in python's nvidia packages" >&2; exit 2; }
    lib=$(ls "$cb"/lib/libcublas.so* | head -1) lt=$(ls "$cb"/lib/libcublasLt.so* | head -1)
    echo "gpu_check: cuBLAS from $cb"
    flags+=(-DCUDA_cublas_LIBRARY="$lib" -DCUDA_cublasLt_LIBRARY="$lt" -DCMAKE_CUDA_FLAGS="-I$cb/include"
            -DCMAKE_CXX_FLAGS="-I$cb/include" -DCMAKE_C_FLAGS="-I$cb/include")
  fi
fi
[ -n "${SKV_GPU_CMAKE:-}" ] && read -ra extra <<<"$SKV_GPU_CMAKE" && flags+=("${extra[@]}")
t0=$(date +%s)
cmake -S "$SRC/llama.cpp" -B "$BUILD" "${gen[@]}" "${flags[@]}" >"$WORK/configure-$MODE.log" 2>&1 \
  || { tail -30 "$WORK/configure-$MODE.log"; echo "gpu_check: cmake configure failed" >&2; exit 1; }
cmake --build "$BUILD" --target llama -j "$(nproc)" >"$WORK/build-$MODE.log" 2>&1 \
  || { tail -40 "$WORK/build-$MODE.log"; echo "gpu_check: the build failed" >&2; exit 1; }
build_s=$(( $(date +%s) - t0 ))
echo "gpu_check: built $BUILD/bin/libllama.so in ${build_s} s"
[ "$BUILD_ONLY" = 1 ] && exit 0

# 3. the checks and the table, through the engine's own Python over ctypes
export LLAMA_CPP_LIB_PATH=$BUILD/bin
export PYTHONPATH=$PACK/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}
export SKV_BOOKS_DIR=$PACK/books SKV_CACHE_DIR=$WORK/cache PYTHONUNBUFFERED=1
layers=0; [ "$MODE" = cuda ] && layers=999
args=(--gpu-layers "$layers" --out "$RESULTS" --build-s "$build_s" --mode "$MODE")
[ "$QUICK" = 1 ] && args+=(--quick)
rc=0
$PY native/tools/gpu_check.py "${args[@]}" || rc=$?
echo "gpu_check: done in $(( $(date +%s) - t_start )) s (rc $rc); results in $RESULTS"
exit $rc
