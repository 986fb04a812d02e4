"""Issue 3, item 8: llama-cpp-python's own test suite (from the pinned sdist) passes against our patched library
with SentenceKV off. Tests whose fixtures download a model from Hugging Face are skipped (no network in tests)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SKIP_DOWNLOADS = """
import huggingface_hub
import pytest


def _no_download(*args, **kwargs):
    pytest.skip("needs a model download from Hugging Face (tests never touch the network)")


huggingface_hub.hf_hub_download = _no_download
"""


def _sdist_tree() -> Path | None:
    from engine.paths import cache_dir

    for tree in sorted((cache_dir() / "src").glob("*/tree")):
        if (tree / "tests" / "test_llama.py").exists():
            return tree
    return None


@pytest.mark.slow
def test_llama_cpp_python_suite_passes_on_patched_library(tmp_path):
    pytest.importorskip("scipy", reason="the upstream suite imports scipy (dev extra)")
    tree = _sdist_tree()
    if tree is None:
        pytest.skip("the llama-cpp-python source tree is not in the cache dir; run native/build.py first")
    work = tmp_path / "upstream"
    shutil.copytree(tree / "tests", work / "tests")
    (work / "tests" / "conftest.py").write_text(SKIP_DOWNLOADS)
    # the suite opens ./vendor/llama.cpp/models/*.gguf relative to the sdist root
    (work / "vendor" / "llama.cpp").mkdir(parents=True)
    (work / "vendor" / "llama.cpp" / "models").symlink_to(tree / "vendor" / "llama.cpp" / "models")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=900,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "LLAMA_SKV": "0"},
    )
    tail = proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    assert " passed" in proc.stdout, tail
    # the library under test is ours
    import llama_cpp.llama_cpp as ll

    assert hasattr(ll._lib, "llama_skv_version")
