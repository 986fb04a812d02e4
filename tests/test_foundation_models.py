"""engine.models: the default model is assembled, verified and loadable; corruption is detected (issue 2)."""

import shutil

import pytest

from engine import models
from engine.models import ModelError, read_model_info, verify_sha256


def test_tiny_gguf_header_reads_back(tiny_model_path):
    info = read_model_info(tiny_model_path)
    assert (info.architecture, info.n_layer, info.n_embd) == ("llama", 2, 256)
    assert (info.n_head, info.n_head_kv, info.context_length) == (4, 2, 4096)


def test_default_model_path_is_verified_gemma(default_model_path):
    info = read_model_info(default_model_path)
    assert info.architecture == "gemma3"
    assert info.context_length == 32768
    assert default_model_path.parent == models.models_dir()


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


def test_default_model_corrupt_copy_in_cache_is_reported(tmp_path, monkeypatch, default_model_path):
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    bad = cache / "models" / default_model_path.name
    shutil.copyfile(default_model_path, bad)
    with open(bad, "r+b") as f:
        f.seek(1 << 20)
        f.write(b"\xff\xfe")
    monkeypatch.setenv("SKV_CACHE_DIR", str(cache))
    with pytest.raises(ModelError, match="corrupt"):
        models.default_model_path()


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
