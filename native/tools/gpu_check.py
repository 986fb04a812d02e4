"""The checks and the table of native/tools/gpu_check.sh (run by it, with LLAMA_CPP_LIB_PATH at the fresh build and
PYTHONPATH at .gpu/site): plain python3 + numpy + pytest, no packages of ours installed.

1. the native exactness, sparse-output, remapping and score tests (tests/test_native_exactness.py on the tiny model,
   tests/test_native_sparse_output.py, tests/test_native_remap.py, tests/test_native_scores.py) under pytest with
   every layer offloaded (SKV_TEST_GPU_LAYERS);
2. exactness on a synthetic model of the built-in default's attention shape (24 layers, 14 query / 2 KV heads,
   head_dim 64): SentenceKV with a budget covering the context vs dense attention on the same library;
3. `skv bench scale` (engine/bench/scale.py) at 4k/32k/64k on the synthetic 1B-shaped model, stock vs SentenceKV,
   with the device bytes each session took as CUDA's allocator reports them (ggml_backend_cuda_get_device_memory).

Writes OUT/gpu_check.json and OUT/gpu_check.md (and OUT/checks.xml, OUT/scale.json). Exit 1 when a check fails.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NATIVE_TESTS = [
    "tests/test_native_exactness.py::test_budget_covering_context_matches_dense_on_tiny_model",
    "tests/test_native_exactness.py::test_small_budget_differs_from_dense",
    "tests/test_native_sparse_output.py",
    "tests/test_native_remap.py",  # positions past the trained length: the in-graph RoPE delta, the sparse prefill
    "tests/test_native_scores.py",  # scores at a fixed distance: the in-graph query rotation, content vectors
]


def log(msg: str) -> None:
    print(f"[gpu_check] {msg}", file=sys.stderr, flush=True)


def cuda_used() -> Callable[[], int] | None:
    """Bytes in use on CUDA device 0 (total - free, from ggml's CUDA backend), or None without one."""
    lib_dir = Path(os.environ.get("LLAMA_CPP_LIB_PATH", ""))
    try:
        lib = ctypes.CDLL(str(lib_dir / "libggml-cuda.so"))
    except OSError:
        return None
    fn = lib.ggml_backend_cuda_get_device_memory
    fn.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)]
    fn.restype = None

    def used() -> int:
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        fn(0, ctypes.byref(free), ctypes.byref(total))
        return int(total.value - free.value)

    return used


def check_bindings() -> dict:
    """The bindings come from the pack and load the library just built (not an installed wheel)."""
    import llama_cpp

    lib = llama_cpp.llama_cpp._lib
    info = {
        "llama_cpp": llama_cpp.__file__,
        "version": llama_cpp.__version__,
        "lib_path": os.environ.get("LLAMA_CPP_LIB_PATH"),
        "patched": hasattr(lib, "llama_skv_version"),
        "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
    }
    if not info["patched"]:
        raise SystemExit("gpu_check: the loaded libllama has no llama_skv_* symbols (stock library?)")
    return info


def run_native_tests(out: Path, gpu_layers: int) -> dict:
    env = dict(os.environ, SKV_TEST_GPU_LAYERS=str(gpu_layers))
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        "-rfE",
        f"--junitxml={out / 'checks.xml'}",
        *NATIVE_TESTS,
    ]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    tail = (p.stdout + p.stderr).strip().splitlines()
    log("native tests: " + (tail[-1] if tail else f"rc {p.returncode}"))
    if p.returncode != 0:
        print("\n".join(tail[-60:]), file=sys.stderr)
    return {
        "cmd": " ".join(cmd[3:]),
        "rc": p.returncode,
        "summary": tail[-1] if tail else "",
        "seconds": round(time.perf_counter() - t0, 1),
        "passed": p.returncode == 0,
    }


def synthetic(name: str, shape, quant: str) -> Path:
    from engine.bench.synthetic import find_vocab_file, write_random_llama
    from engine.paths import cache_dir

    path = cache_dir() / "models" / "gpu_check" / f"{name}-{quant}.gguf"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        vocab = find_vocab_file()
        if vocab is None:
            raise SystemExit("gpu_check: the llama-spm vocabulary is missing (resources/vocab)")
        t0 = time.perf_counter()
        write_random_llama(path, vocab, shape, quant=quant)
        log(f"wrote {path.name} ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.0f} s")
    return path


def default_shape_exactness(gpu_layers: int, quick: bool) -> dict:
    """SentenceKV (budget covering the context) vs dense on the default's attention shape: the test's own check."""
    os.environ["SKV_TEST_GPU_LAYERS"] = str(gpu_layers)
    sys.path.insert(0, str(ROOT / "tests" / "support"))
    from skv_harness import check_staged_matches_dense

    from engine.bench.synthetic import DEFAULT_LIKE, TINY_DEFAULT_LIKE

    shape = TINY_DEFAULT_LIKE if quick else DEFAULT_LIKE
    path = synthetic(shape.name, shape, "q4_0")
    n_prefill, n_steps = (300, 8) if quick else (3000, 64)
    t0 = time.perf_counter()
    row = {
        "model": path.name,
        "n_layer": shape.n_layer,
        "n_head": shape.n_head,
        "n_head_kv": shape.n_head_kv,
        "n_prefill": n_prefill,
        "n_steps": n_steps,
    }
    try:
        check_staged_matches_dense(path, n_ctx=4096, n_prefill=n_prefill, n_steps=n_steps, budget=4096)
        row["passed"], row["error"] = True, None
    except AssertionError as e:
        row["passed"], row["error"] = False, str(e)[:300]
    row["seconds"] = round(time.perf_counter() - t0, 1)
    log(f"default-shape exactness: {'passed' if row['passed'] else 'FAILED: ' + row['error']}")
    return row


def model_device_bytes(path: Path, gpu_layers: int, used) -> int | None:
    """Bytes the weights alone take on the device (a model loaded with no context)."""
    if used is None:
        return None
    import llama_cpp.llama_cpp as ll

    u0 = used()
    mp = ll.llama_model_default_params()
    mp.n_gpu_layers = gpu_layers
    m = ll.llama_model_load_from_file(str(path).encode(), mp)
    if not m:
        raise SystemExit(f"gpu_check: could not load {path}")
    u1 = used()
    ll.llama_model_free(m)
    return u1 - u0


def speed_table(out: Path, gpu_layers: int, quick: bool, used) -> dict:
    from engine.bench.scale import ScaleConfig, flatness, run_scale
    from engine.bench.synthetic import LLAMA_1B_LIKE, TINY_DEFAULT_LIKE

    shape = TINY_DEFAULT_LIKE if quick else LLAMA_1B_LIKE
    path = synthetic(shape.name, shape, "q4_0")
    contexts = (1024, 2048) if quick else (4096, 32768, 65536)
    cfg = ScaleConfig(
        model=str(path),
        contexts=contexts,
        steps=4 if quick else 16,
        repeats=1 if quick else 2,
        threads=min(8, os.cpu_count() or 2),
        n_gpu_layers=gpu_layers,
        device_used=used,
        out=out / "scale",
        extra={"gpu_check": True},
    )
    weights = model_device_bytes(path, gpu_layers, used)
    data = run_scale(cfg, log=log)
    main = data["config"]["main"]
    rows = []
    for r in data["results"]:
        ms, m = r["ms_per_token"], r["memory"]
        dev = m.get("device_allocator") or {}
        rows.append(
            {
                "context": r["context"],
                "stock_ms": ms["stock"],
                "skv_ms": ms[main],
                "stock_over_skv": ms["stock"] / ms[main],
                "skv_over_first": flatness(r, data["results"][0], main),
                "skv_reported_device_bytes": m["device_skv_bytes"],
                "full_kv_bytes": m["full_kv_bytes"],
                "cuda_stock_session_bytes": dev.get("stock_session_bytes"),
                "cuda_skv_session_bytes": dev.get("skv_session_bytes"),
                "cuda_weights_bytes": weights,
            }
        )
    return {"model": path.name, "main": main, "rows": rows, "wall_s": data["wall_s"]}


def mib(v) -> str:
    return "-" if v is None else f"{v / 2**20:.0f}"


def render(res: dict) -> str:
    lines = [
        f"# gpu_check ({res['mode']}, {res['date']})",
        "",
        f"Library built in {res['build_s']} s; bindings {res['bindings']['version']}, offload "
        f"{res['bindings']['gpu_offload']}, {res['gpu_layers']} layers offloaded.",
        "",
        f"- native tests ({res['native_tests']['cmd']}): {res['native_tests']['summary']}",
        f"- default-shape exactness ({res['default_shape']['model']}, {res['default_shape']['n_prefill']} "
        f"prefilled, {res['default_shape']['n_steps']} steps): "
        f"{'passed' if res['default_shape']['passed'] else 'FAILED ' + str(res['default_shape']['error'])}",
        "",
    ]
    t = res["speed"]
    lines += [
        f"Speed and memory ({t['model']}, `{t['main']}`; CUDA bytes = allocator's used before/after each "
        "session, weights included; weights alone measured separately):",
        "",
        "| ctx | stock ms/tok | skv ms/tok | stock/skv | skv/skv@1st | SKV device MiB (reported) | full KV MiB "
        "| CUDA stock session MiB | CUDA skv session MiB | CUDA weights MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in t["rows"]:
        lines.append(
            f"| {r['context']} | {r['stock_ms']:.2f} | {r['skv_ms']:.2f} | {r['stock_over_skv']:.2f} | "
            f"{r['skv_over_first']:.2f} | {mib(r['skv_reported_device_bytes'])} | {mib(r['full_kv_bytes'])} | "
            f"{mib(r['cuda_stock_session_bytes'])} | {mib(r['cuda_skv_session_bytes'])} | "
            f"{mib(r['cuda_weights_bytes'])} |"
        )
    lines += ["", f"Total {res['wall_s']:.0f} s after the build; passed: {res['passed']}."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu-layers", type=int, default=999)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--build-s", type=int, default=None)
    ap.add_argument("--mode", default="cuda")
    ap.add_argument(
        "--quick", action="store_true", help="small shapes and contexts (the rehearsal in the suite)"
    )
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    used = cuda_used() if args.gpu_layers > 0 else None
    res: dict = {
        "mode": args.mode,
        "quick": args.quick,
        "gpu_layers": args.gpu_layers,
        "build_s": args.build_s,
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "bindings": check_bindings(),
    }
    log(f"bindings {res['bindings']['llama_cpp']} over {res['bindings']['lib_path']}")
    res["native_tests"] = run_native_tests(args.out, args.gpu_layers)
    res["default_shape"] = default_shape_exactness(args.gpu_layers, args.quick)
    res["speed"] = speed_table(args.out, args.gpu_layers, args.quick, used)
    res["passed"] = res["native_tests"]["passed"] and res["default_shape"]["passed"]
    res["wall_s"] = time.perf_counter() - t0
    (args.out / "gpu_check.json").write_text(json.dumps(res, indent=2) + "\n")
    md = render(res)
    (args.out / "gpu_check.md").write_text(md)
    print(md)
    return 0 if res["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
