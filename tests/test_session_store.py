"""Issue 4: document sessions persist. A prefilled document set is saved under the cache dir and restored without a
prefill (same next-token logits, same sentence table); corrupt or truncated files are deleted with a warning and
the documents are prefilled again; the folder is bounded (LRU by mtime) and listable."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from skv_harness import book_text

from engine.documents import Document
from engine.params import SkvParams
from engine.session import DocRange, Session, SessionConfig
from engine.session_store import FORMAT_VERSION, MAGIC, SessionStore, make_key

N_CTX = 1024


@pytest.fixture(scope="module")
def session(tiny_model_path):
    s = Session(SessionConfig(str(tiny_model_path), n_ctx=N_CTX, n_threads=2, skv=SkvParams(budget=256)))
    yield s
    s.close()


@pytest.fixture()
def doc() -> Document:
    return Document.from_text("book.txt", book_text(n_chars=2500), path="/books/book.txt")


@pytest.fixture()
def store(tmp_path) -> tuple[SessionStore, list[str]]:
    warnings: list[str] = []
    return SessionStore(tmp_path / "sessions", max_bytes=1 << 30, on_warning=warnings.append), warnings


def _next_logits(session: Session, n: int = 4) -> np.ndarray:
    """Logits of n greedy decode steps from the end of the documents (then rewound)."""
    out = []
    for _ in range(n):
        logits = np.array(session.logits(), dtype=np.float32)
        out.append(logits)
        session.eval([int(np.argmax(logits))])
    session.rewind(session.n_doc_tokens)
    return np.stack(out)


def test_second_load_restores_the_saved_session_without_prefill(session, doc, store):
    st, warnings = store
    first = session.load_documents([doc], reserve=64, store=st)
    assert not first.restored and first.n_tokens_loaded == first.n_tokens_total
    table, spans, n_doc = session.skv.sentences(), list(session.spans), session.n_doc_tokens
    _next_logits(session)
    ref = _next_logits(session)  # after a rewind: the last two tokens re-decoded, as a restore does
    assert len(st.entries()) == 1

    session.reset()
    calls: list[tuple[int, int]] = []
    again = session.load_documents([doc], reserve=64, store=st, on_progress=lambda d, t: calls.append((d, t)))
    assert again.restored
    assert (again.n_tokens_total, again.n_tokens_loaded) == (first.n_tokens_total, first.n_tokens_loaded)
    assert session.n_doc_tokens == n_doc and list(session.spans) == spans
    assert session.skv.sentences() == table
    assert calls == [(n_doc, n_doc)]
    np.testing.assert_allclose(_next_logits(session), ref, atol=1e-3)
    assert warnings == []


def test_key_changes_with_documents_ranges_and_context(session, doc):
    other = Document.from_text("book.txt", doc.text + " More.")
    k = session.store_key([doc])
    assert k == session.store_key([doc])
    assert k != session.store_key([other])
    assert k != session.store_key([doc], {0: DocRange(2, 10)})
    assert make_key({"a": 1}) != make_key({"a": 2})


def test_corrupt_file_is_deleted_with_a_warning_then_prefilled(session, doc, store):
    st, warnings = store
    session.load_documents([doc], reserve=64, store=st)
    path = st.path_for(session.store_key([doc]))
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # one flipped byte in the state
    path.write_bytes(bytes(data))
    session.reset()
    report = session.load_documents([doc], reserve=64, store=st)
    assert not report.restored
    assert len(warnings) == 1 and "checksum" in warnings[0] and "deleted" in warnings[0]
    assert path.is_file()  # the fresh prefill was saved again
    session.reset()
    assert session.load_documents([doc], reserve=64, store=st).restored


@pytest.mark.parametrize("cut", [4, 30, -1000])
def test_truncated_file_is_a_miss_and_deleted(tmp_path, cut):
    warnings: list[str] = []
    st = SessionStore(tmp_path, on_warning=warnings.append)
    key = "ab" * 32
    path = st.save(key, {"n_doc_tokens": 3}, b"\0" * 12, os.urandom(4096))
    assert st.load(key) is not None
    data = path.read_bytes()
    path.write_bytes(data[:cut])
    assert st.load(key) is None
    assert not path.exists() and len(warnings) == 1
    assert "truncated" in warnings[0] or "bytes, expected" in warnings[0]


def test_other_format_version_is_a_miss_left_alone(tmp_path):
    st = SessionStore(tmp_path, on_warning=lambda m: pytest.fail(m))
    key = "cd" * 32
    path = st.save(key, {}, b"", b"x" * 10)
    data = bytearray(path.read_bytes())
    assert data[:8] == MAGIC
    data[8:12] = (FORMAT_VERSION + 1).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    assert st.load(key) is None and path.exists()


def test_store_is_bounded_least_recently_used_first(tmp_path):
    st = SessionStore(tmp_path, max_bytes=1 << 20)
    keys = [f"{i:064x}" for i in range(4)]
    size = st.save(keys[0], {"i": 0}, b"", b"s" * 1000).stat().st_size
    st.max_bytes = 3 * size + size // 2  # room for three files
    for i, key in enumerate(keys[:3]):
        st.save(key, {"i": i}, b"", b"s" * 1000)
        t = time.time() - 100 + i
        os.utime(st.path_for(key), (t, t))
    assert st.load(keys[0]) is not None  # a hit makes key 0 the most recently used
    st.save(keys[3], {}, b"", b"s" * 1000)
    left = {e.key for e in st.entries()}
    assert left == {keys[0], keys[2], keys[3]}
    assert st.total_bytes() <= st.max_bytes


def test_session_larger_than_the_limit_is_not_saved(tmp_path):
    warnings: list[str] = []
    st = SessionStore(tmp_path, max_bytes=100, on_warning=warnings.append)
    assert st.save("ef" * 32, {}, b"", b"s" * 1000) is None
    assert st.entries() == [] and "larger than the session cache limit" in warnings[0]


def test_max_bytes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SKV_SESSION_CACHE_MAX_BYTES", "12345")
    assert SessionStore(tmp_path).max_bytes == 12345
    monkeypatch.setenv("SKV_SESSION_CACHE_MAX_BYTES", "lots")
    with pytest.raises(ValueError, match="SKV_SESSION_CACHE_MAX_BYTES"):
        SessionStore(tmp_path)


def test_cli_cache_list_and_clear(monkeypatch, tmp_path: Path, capsys):
    from engine.cli import main

    monkeypatch.setenv("SKV_CACHE_DIR", str(tmp_path))
    st = SessionStore()
    st.save(
        "12" * 32,
        {"documents": [{"name": "a.txt"}], "model_name": "m.gguf", "n_ctx": 4096, "n_doc_tokens": 77},
        b"",
        b"s" * 2048,
    )
    assert main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    assert "a.txt" in out and "m.gguf" in out and "1 saved document sessions" in out
    assert main(["cache", "clear"]) == 0
    assert "removed 1" in capsys.readouterr().out
    assert st.entries() == []
