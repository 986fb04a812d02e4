"""native/build.py: stable cache key, cache hits without rebuilding, one clear line for a bad patch."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "native" / "build.py"


def run_build(*args, env=None, script=BUILD, timeout=120):
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def print_key(*args):
    proc = run_build("--print-key", *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_cache_key_is_stable_and_depends_on_flags():
    a, b = print_key(), print_key()
    assert a["key"] == b["key"]
    assert a["version"] == f"0.3.36+skv.{a['key'][:12]}"
    assert "-DLLAVA_BUILD=OFF" in a["flags"]["cmake_args"]
    assert "-DGGML_NATIVE=OFF" in a["flags"]["cmake_args"]
    native = print_key("--native")
    cuda = print_key("--cuda", "--cuda-arch", "89")
    assert len({a["key"], native["key"], cuda["key"]}) == 3
    assert "-DCMAKE_CUDA_ARCHITECTURES=89" in cuda["flags"]["cmake_args"]


def test_installed_wheel_is_the_cached_build_of_this_tree():
    """After `make setup`, the current tree's wheel is cached and is the one installed."""
    import llama_cpp

    info = print_key()
    if info["cached"] is None:
        pytest.skip("no cached wheel for this tree (set up with another cache dir or flags)")
    assert llama_cpp.__version__ == info["version"]


def test_second_run_returns_cached_wheel_quickly():
    info = print_key()
    if info["cached"] is None:
        pytest.skip("no cached wheel for this tree")
    start = time.monotonic()
    proc = run_build(timeout=60)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == info["cached"]
    assert "cached wheel" in proc.stderr
    assert elapsed < 20, f"cache hit took {elapsed:.1f} s"


def _pristine_sdist_tree():
    sys.path.insert(0, str(ROOT / "tests" / "support"))
    from tiny_gguf import source_roots as _source_roots

    for root in _source_roots():
        if (root / "PKG-INFO").is_file() and root.parent.name == "sdist":
            return root
    return None


def test_patch_that_does_not_apply_is_one_clear_error(tmp_path):
    src = _pristine_sdist_tree()
    if src is None:
        pytest.skip("no unpacked sdist under the cache dir")
    native = tmp_path / "native"
    (native / "patches").mkdir(parents=True)
    shutil.copy(BUILD, native / "build.py")
    bad = native / "patches" / "0001-bad.patch"
    bad.write_text(
        "diff --git a/src/llama.cpp b/src/llama.cpp\n--- a/src/llama.cpp\n+++ b/src/llama.cpp\n"
        "@@ -1,3 +1,3 @@\n-this line is not there\n+nor is this\n context\n"
    )
    proc = run_build(
        "--source", str(src), script=native / "build.py", env={"SKV_CACHE_DIR": str(tmp_path / "c")}
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "patch does not apply" in lines[0] and "0001-bad.patch" in lines[0]


def _load_build_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("skv_native_build", BUILD)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_sync_tree_rewrites_only_changed_files_and_restores_dropped_overlays(tmp_path):
    """Unchanged files keep their mtime (so ninja rebuilds only what changed); an overlay that is no longer
    wanted goes back to the pristine content, and a new file that is no longer wanted is removed."""
    build = _load_build_module()
    pristine, tree = tmp_path / "pristine", tmp_path / "work" / "tree"
    (pristine / "src").mkdir(parents=True)
    (pristine / "src" / "a.cpp").write_text("a0")
    (pristine / "src" / "b.cpp").write_text("b0")
    build.populate_tree(pristine, tree)
    assert build.sync_tree(pristine, tree, {"src/a.cpp": b"a1", "src/new.cpp": b"n1"}) == 2
    old = 1_000_000_000
    for name in ("a.cpp", "b.cpp", "new.cpp"):
        os.utime(tree / "src" / name, ns=(old, old))

    assert build.sync_tree(pristine, tree, {"src/a.cpp": b"a1", "src/new.cpp": b"n2"}) == 1
    assert (tree / "src" / "a.cpp").stat().st_mtime_ns == old
    assert (tree / "src" / "new.cpp").read_text() == "n2"

    assert build.sync_tree(pristine, tree, {}) == 2
    assert (tree / "src" / "a.cpp").read_text() == "a0"
    assert not (tree / "src" / "new.cpp").exists()
    assert (tree / "src" / "b.cpp").stat().st_mtime_ns == old
