"""Build the stock libllama (unpatched, same sdist) and compare its logits with the patched library's, SentenceKV
off: they must be bit-identical.

    python native/tools/compare_stock.py [--model PATH] [--build-dir DIR]

Builds `llama` only with CMake from the cached, pristine sdist (about 3 min on 2 cores the first time), then runs the
same prompt through both libraries in two subprocesses (LLAMA_CPP_LIB_PATH selects the library) and prints the
max |dlogit| over every position of a 600-token prompt.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

PROBE = r"""
import json, sys, numpy as np, llama_cpp
llm = llama_cpp.Llama(sys.argv[1], n_ctx=1024, n_threads=2, flash_attn=True, swa_full=False, logits_all=True,
                      verbose=False)
text = open(sys.argv[2], encoding="utf-8").read()[20000:24000]
toks = llm.tokenize(text.encode(), add_bos=True)[:600]
llm.eval(toks)
np.save(sys.argv[3], np.asarray(llm.scores[: len(toks)], dtype=np.float32))
lib = llama_cpp.llama_cpp._lib
print(json.dumps({"patched": hasattr(lib, "llama_skv_version"), "n": len(toks)}))
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="GGUF (default: the built-in model)")
    ap.add_argument("--build-dir", default=None, help="where to build the stock library")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from engine.models import default_model_path
    from engine.paths import cache_dir

    model = args.model or str(default_model_path())
    sdists = sorted((cache_dir() / "sdist").glob("llama_cpp_python-0.3.36*.tar.gz"))
    if not sdists:
        print("compare_stock: the sdist is not cached: run native/build.py first", file=sys.stderr)
        return 2
    root = Path(args.build_dir or cache_dir() / "stock")
    src = root / "llama_cpp_python-0.3.36"
    if not src.exists():
        root.mkdir(parents=True, exist_ok=True)
        with tarfile.open(sdists[0]) as tf:
            tf.extractall(root, filter="data")
    ll = src / "vendor" / "llama.cpp"
    build = root / "build"
    lib_dir = build / "bin"
    if not (lib_dir / "libllama.so").exists():
        flags = [
            "-DBUILD_SHARED_LIBS=ON",
            "-DLLAMA_BUILD_COMMON=OFF",
            "-DLLAMA_BUILD_TESTS=OFF",
            "-DLLAMA_BUILD_TOOLS=OFF",
            "-DLLAMA_BUILD_EXAMPLES=OFF",
            "-DLLAMA_BUILD_SERVER=OFF",
            "-DGGML_NATIVE=OFF",
            "-DCMAKE_BUILD_TYPE=Release",
        ]
        subprocess.run(["cmake", "-S", str(ll), "-B", str(build), "-G", "Ninja", *flags], check=True)
        subprocess.run(
            ["cmake", "--build", str(build), "--target", "llama", "-j", str(os.cpu_count() or 2)], check=True
        )
    book = Path(__file__).resolve().parents[2] / "resources" / "books" / "alice_in_wonderland.txt"
    out = {}
    for name, env in (("stock", {"LLAMA_CPP_LIB_PATH": str(lib_dir)}), ("patched", {})):
        npy = root / f"logits_{name}.npy"
        r = subprocess.run(
            [sys.executable, "-c", PROBE, model, str(book), str(npy)],
            capture_output=True,
            text=True,
            env={**os.environ, **env, "LLAMA_SKV": "0"},
            check=True,
        )
        out[name] = json.loads(r.stdout.strip().splitlines()[-1])
    import numpy as np

    a = np.load(root / "logits_stock.npy")
    b = np.load(root / "logits_patched.npy")
    diff = float(np.abs(a - b).max())
    print(
        json.dumps(
            {
                "libraries": out,
                "positions": int(a.shape[0]),
                "max_abs_dlogit": diff,
                "bit_identical": bool(np.array_equal(a, b)),
            }
        )
    )
    return 0 if np.array_equal(a, b) and not out["stock"]["patched"] and out["patched"]["patched"] else 1


if __name__ == "__main__":
    sys.exit(main())
