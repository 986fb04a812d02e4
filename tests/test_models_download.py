"""Issue 4: a model download from Hugging Face, against a local HTTP server on 127.0.0.1 standing in for the hub
(never the real internet): progress, resume after an interrupted transfer, sha256 mismatch and offline errors."""

from __future__ import annotations

import hashlib
import re
import socket

import pytest
from fake_hub import CHUNK, FILE, REPO

from engine import models
from engine.models import DownloadCancelled, ModelError, download_model


def test_download_reports_progress_and_verifies_the_lfs_sha(hub, payload):
    seen: list[tuple[int, int]] = []
    path = download_model(REPO, FILE, on_progress=lambda d, t: seen.append((d, t)))
    assert path.read_bytes() == payload
    assert path.parent == models.models_dir() / "hf" / "tester--tiny-gguf"
    assert seen[-1] == (len(payload), len(payload))
    assert len(seen) >= 5 and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert path in models.list_local_models()
    # verified once: the stamp makes it a known model for session keys
    assert models.model_identity(path) == f"sha256:{hashlib.sha256(payload).hexdigest()}"


def test_stopped_download_resumes_where_it_stopped(hub, payload):
    half = len(payload) // 2
    done = [0]

    def note(d: int, t: int) -> None:
        done[0] = d

    with pytest.raises(DownloadCancelled, match="resume"):
        download_model(REPO, FILE, on_progress=note, should_stop=lambda: done[0] >= half)
    partial = list((models.models_dir() / "hf").rglob("*.part"))
    assert len(partial) == 1 and half - CHUNK <= partial[0].stat().st_size < len(payload)
    assert models.list_local_models() == []  # nothing half-downloaded carries the model's name
    kept = partial[0].stat().st_size
    hub.reset_served()
    seen: list[tuple[int, int]] = []
    path = download_model(REPO, FILE, on_progress=lambda d, t: seen.append((d, t)))
    assert path.read_bytes() == payload
    assert hub.ranges[-1] == f"bytes={kept}-"
    assert hub.served == len(payload) - kept  # only the rest came over the wire
    assert seen[0][0] == kept and seen[-1] == (len(payload), len(payload))


def test_transfer_cut_by_the_network_resumes_within_the_call(hub, payload):
    hub.cut_gets, hub.cut_at = 1, 200 * 1024
    path = download_model(REPO, FILE)
    assert path.read_bytes() == payload
    assert hub.ranges[0] is None and re.fullmatch(r"bytes=\d+-", hub.ranges[-1] or "")
    assert int(hub.ranges[-1][6:-1]) > 0


def test_sha_mismatch_is_a_clear_error_and_deletes_the_file(hub, payload):
    with pytest.raises(ModelError, match=r"corrupt: sha256 .* expected 0000000000000000.*deleted"):
        download_model(REPO, FILE, sha256="0" * 64)
    assert models.list_local_models() == []


def test_wrong_file_or_repo_is_a_clear_error(hub):
    with pytest.raises(ModelError, match="has no file 'nope.gguf'"):
        download_model(REPO, "nope.gguf")
    with pytest.raises(ModelError, match="no repo other/repo"):
        download_model("other/repo", FILE)


def test_offline_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("SKV_CACHE_DIR", str(tmp_path / "cache"))
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ModelError) as err:
        download_model(REPO, FILE, endpoint=f"http://127.0.0.1:{port}")
    msg = str(err.value)
    assert "\n" not in msg and "could not be reached" in msg and "check the network connection" in msg


def test_cli_models_download_and_list(hub, payload, capsys):
    from engine.cli import main

    assert main(["models", "download", REPO, FILE]) == 0
    out = capsys.readouterr()
    assert FILE in out.out and "100%" in out.err
    assert main(["models", "download", REPO, FILE, "--sha256", "f" * 64]) == 1
    assert "corrupt" in capsys.readouterr().err
