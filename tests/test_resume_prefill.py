"""Issue 15: a long prefill keeps what it finished. With a session store, a stopped prefill saves a partial session
and a crashed one leaves its last periodic checkpoint; the next load of the same documents restores it and prefills
the rest, giving the same context as an uninterrupted prefill (logits equal). Tiny model; the checkpoint thresholds
lowered so a 3k-token document checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
from skv_harness import book_text

from engine.documents import Document
from engine.params import SkvParams
from engine.session import Cancelled, Session, SessionConfig
from engine.session.persistence import partial_key
from engine.session_store import SessionStore


@pytest.fixture
def often(monkeypatch):
    monkeypatch.setattr("engine.session.core.CHECKPOINT_MIN_TOKENS", 512)
    monkeypatch.setattr("engine.session.core.CHECKPOINT_S", 0.0)  # after every chunk


def _session(model) -> Session:
    return Session(
        SessionConfig(
            str(model), n_ctx=4096, n_threads=1, n_batch=256, skv=SkvParams(budget=512, sink=16, ring=32)
        )
    )


def _next_logits(s: Session) -> np.ndarray:
    return s.teacher_force(s.tokenize(" and then"))


def _reference(model, doc) -> np.ndarray:
    s = _session(model)
    try:
        s.load_documents([doc], reserve=256)
        return _next_logits(s)
    finally:
        s.close()


def test_a_stopped_prefill_resumes_where_it_stopped(tiny_model_path, tmp_path, often):
    doc = Document.from_text("book.txt", book_text(n_chars=10_000))
    store = SessionStore(tmp_path / "sessions")
    s = _session(tiny_model_path)
    try:
        chunks = []
        with pytest.raises(Cancelled):
            s.load_documents(
                [doc],
                reserve=256,
                store=store,
                on_progress=lambda n, t: chunks.append(n),
                should_stop=lambda: len(chunks) >= 4,
            )
        assert s.n_past == 0  # the session itself is empty
        key = s.store_key([doc])
        part = store.load(partial_key(key))
        assert part is not None and part.meta["partial"] == 1024 and store.load(key) is None
        seen = []
        report = s.load_documents(
            [doc], reserve=256, store=store, on_progress=lambda n, t: seen.append((n, t))
        )
        assert seen[0][0] == 1024 + 256  # the first chunk after the 1024 restored tokens
        assert not report.restored and report.n_tokens_loaded == report.n_tokens_total > 2000
        assert (
            store.load(partial_key(key)) is None and store.load(key) is not None
        )  # whole saved, partial gone
        got = _next_logits(s)
    finally:
        s.close()
    assert np.array_equal(got, _reference(tiny_model_path, doc))


def test_a_crashed_prefill_resumes_from_its_last_checkpoint(tiny_model_path, tmp_path, often):
    doc = Document.from_text("book.txt", book_text(n_chars=10_000))
    store = SessionStore(tmp_path / "sessions")
    s = _session(tiny_model_path)

    def crash(n: int, _total: int) -> None:
        if n >= 768:
            raise RuntimeError("the machine went down")

    try:
        with pytest.raises(RuntimeError):
            s.load_documents([doc], reserve=256, store=store, on_progress=crash)
        key = s.store_key([doc])
        assert store.load(partial_key(key)).meta["partial"] == 512  # the checkpoint after the chunk before
        seen = []
        s.load_documents([doc], reserve=256, store=store, on_progress=lambda n, t: seen.append(n))
        assert seen[0] == 768
        got = _next_logits(s)
    finally:
        s.close()
    assert np.array_equal(got, _reference(tiny_model_path, doc))
