"""Issue 16 item 4: the one-command GPU check, rehearsed on the CPU.

native/tools/gpu_pack.py packs the patched, trimmed llama.cpp source and the pure-Python packages a GPU machine
without a package index lacks; native/tools/gpu_check.sh builds the library from that pack, runs the native checks
through the pack's bindings and prints the speed/memory table. Here it runs with --cpu --quick: everything but the
CUDA backend (a CPU build of the trimmed tree, ~2 min on 2 cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gpu") / "pack"
    p = subprocess.run(
        [sys.executable, "native/tools/gpu_pack.py", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    return out


def test_the_pack_fits_the_device_limit_and_holds_the_patched_source(pack):
    m = json.loads((pack / "MANIFEST.json").read_text())
    assert m["total_bytes"] <= m["limit_bytes"] == 64 * 2**20
    assert m["total_bytes"] == m["working_tree_bytes"] + sum(m["bytes"].values())
    with tarfile.open(pack / "llama.cpp.tar.gz") as tf:
        names = set(tf.getnames())
        graph = tf.extractfile("llama.cpp/src/llama-graph.cpp").read().decode()
    # ours and the hooks are in; what the llama target does not read is out
    assert "llama.cpp/src/llama-skv-cache.cpp" in names and "llama.cpp/include/llama-skv.h" in names
    assert "skv" in graph  # patch 0003 applied
    assert any(n.startswith("llama.cpp/ggml/src/ggml-cuda/fattn") for n in names)
    assert not any(
        n.startswith(("llama.cpp/models/", "llama.cpp/docs/", "llama.cpp/ggml/src/ggml-vulkan/"))
        for n in names
    )
    init = (pack / "site" / "llama_cpp" / "__init__.py").read_text()
    assert f'__version__ = "{m["version"]}"' in init and "+skv." in m["version"]
    for pkg in ("gguf", "pysbd", "diskcache"):
        assert (pack / "site" / pkg / "__init__.py").is_file()


def test_gpu_check_without_a_pack_says_what_to_do(tmp_path):
    env = dict(os.environ, SKV_GPU_PACK=str(tmp_path / "none"))
    p = subprocess.run(
        ["bash", "native/tools/gpu_check.sh", "--cpu"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert p.returncode == 2
    assert "gpu_pack.py" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.slow
def test_gpu_check_rehearsal_on_the_cpu(pack, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, SKV_GPU_PACK=str(pack), SKV_GPU_WORK=str(tmp_path / "work"), OUT=str(out))
    env.pop("LLAMA_CPP_LIB_PATH", None)
    p = subprocess.run(
        ["bash", "native/tools/gpu_check.sh", "--cpu", "--quick", "--python", sys.executable],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    res = json.loads((out / "gpu_check.json").read_text())
    # the bindings came from the pack and loaded the library built from it, not the installed wheel
    assert Path(res["bindings"]["llama_cpp"]).is_relative_to(pack / "site")
    assert Path(res["bindings"]["lib_path"]).is_relative_to(tmp_path / "work")
    assert res["bindings"]["patched"] and res["build_s"] > 0
    assert res["native_tests"]["passed"] and " passed" in res["native_tests"]["summary"]
    assert "failed" not in res["native_tests"]["summary"]
    assert res["default_shape"]["passed"]
    rows = res["speed"]["rows"]
    assert [r["context"] for r in rows] == [1024, 2048]
    assert all(r["stock_ms"] > 0 and r["skv_ms"] > 0 and r["skv_reported_device_bytes"] > 0 for r in rows)
    assert all(r["cuda_skv_session_bytes"] is None for r in rows)  # no CUDA here: nothing invented
    assert json.loads((out / "scale" / "scale.json").read_text())["config"]["n_gpu_layers"] == 0
    assert "| 1024 |" in (out / "gpu_check.md").read_text()
    assert "gpu_check: done" in (out / "gpu_check.log").read_text()
