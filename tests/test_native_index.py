"""The SentenceKV index (native/src/llama-skv-index.*) has no ggml dependency: its C++ unit tests
(native/tests/test_index.cpp) build with the system compiler alone and run here."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_index_unit_tests_build_without_ggml_and_pass(tmp_path):
    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    exe = tmp_path / "test_index"
    build = subprocess.run(
        [
            cxx,
            "-std=c++17",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-I",
            str(ROOT / "native" / "src"),
            str(ROOT / "native" / "tests" / "test_index.cpp"),
            str(ROOT / "native" / "src" / "llama-skv-index.cpp"),
            "-o",
            str(exe),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stdout
    assert run.stdout.strip().endswith("passed, 0 failed"), run.stdout
