"""Issue 15: a document longer than the context (past the model's trained length) loads whole when SentenceKV
remaps positions and the host memory holds its K/V: the engine worker opens the context again at the document's
size, and the prefill past the trained length is the sparse chunked one (native, tests/test_native_remap.py).
On a tiny model trained to 512 tokens, with a context of 768 and a document of ~2,300 tokens."""

from __future__ import annotations

import pytest
from tiny_gguf import TinyConfig, find_vocab_file, write_tiny_gguf
from worker_helpers import make_worker

from engine import events as ev
from engine.documents import Document
from engine.params import Remap, SkvParams
from engine.session import SessionConfig
from engine.worker import Ask, LoadModel, OpenDocuments

TEXT = " ".join(f"Sentence number {i} tells about the river, the hill and the old mill." for i in range(160))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    vocab = find_vocab_file()
    if vocab is None:
        pytest.skip("the llama.cpp vocab GGUF is missing; run native/build.py first")
    return write_tiny_gguf(
        tmp_path_factory.mktemp("whole") / "tiny-512.gguf", vocab, TinyConfig(n_ctx_train=512)
    )


def _open(model, remap: Remap, monkeypatch=None, avail: int | None = None):
    worker, rec = make_worker()
    cfg = SessionConfig(
        str(model),
        n_ctx=768,
        n_threads=1,
        n_batch=256,
        skv=SkvParams(budget=256, sink=16, ring=32, remap=remap),
    )
    assert isinstance(rec.terminal(worker.submit(LoadModel(cfg))), ev.Finished)
    if avail is not None:
        monkeypatch.setattr("engine.models.available_memory_bytes", lambda: avail)
    rid = worker.submit(OpenDocuments((Document.from_text("book.txt", TEXT),), reserve=64, whole=True))
    rec.terminal(rid)
    return worker, rec, rid


def test_a_book_past_the_trained_length_loads_whole(model):
    worker, rec, rid = _open(model, Remap.AUTO)
    try:
        evs = rec.of(rid)
        loaded = [e for e in evs if isinstance(e, ev.ModelLoaded)]
        docs = next(e for e in evs if isinstance(e, ev.DocumentsLoaded))
        assert (
            docs.n_tokens_total > 2000 and docs.n_tokens_loaded == docs.n_tokens_total and not docs.truncated
        )
        # the context was opened again at the book's size, past the model's trained 512
        assert (
            len(loaded) == 1 and loaded[0].n_ctx >= docs.n_tokens_total + 64 and loaded[0].n_ctx_train == 512
        )
        assert isinstance(rec.terminal(rid), ev.Finished) and rec.terminal(rid).reason == "done"
        session = worker._session
        st = session.skv.stats()
        assert st.n_skv_steps > 0  # the chunks past 512 ran the sparse path
        # a question over the whole book decodes at remapped positions
        a = worker.submit(Ask("What is the story about?", max_tokens=4))
        assert isinstance(rec.terminal(a), ev.Finished)
        st = session.skv.stats()
        assert st.positions_remapped and st.max_position < 512
        assert st.score_distance == 128  # sentences scored at budget / 2, not at their real distances
    finally:
        assert worker.shutdown(10.0)


def test_without_remapping_the_book_is_cut_to_the_context(model):
    worker, rec, rid = _open(model, Remap.OFF)
    try:
        docs = next(e for e in rec.of(rid) if isinstance(e, ev.DocumentsLoaded))
        assert docs.truncated and docs.n_tokens_loaded <= 768 - 64
        assert not [e for e in rec.of(rid) if isinstance(e, ev.ModelLoaded)]
    finally:
        assert worker.shutdown(10.0)


def test_a_book_that_does_not_fit_in_memory_is_cut_and_says_why(model, monkeypatch):
    worker, rec, rid = _open(model, Remap.AUTO, monkeypatch, avail=1)
    try:
        docs = next(e for e in rec.of(rid) if isinstance(e, ev.DocumentsLoaded))
        assert docs.truncated
        notes = [e.message for e in rec.of(rid) if isinstance(e, ev.ErrorEvent)]
        assert any("more than the free memory" in m and "GiB" in m for m in notes), notes
    finally:
        assert worker.shutdown(10.0)


def test_skv_bench_whole_measures_the_apps_whole_load(model, tmp_path):
    from engine.bench.whole import render_markdown, run_whole

    book = tmp_path / "river.txt"
    book.write_text(TEXT, encoding="utf-8")
    d = run_whole(str(model), str(book), n_ctx=768, threads=1, max_tokens=4, limit=None, log=lambda s: None)
    assert d["n_tokens_loaded"] == d["n_tokens_total"] > 2000 and not d["truncated"]
    assert d["n_ctx"] >= d["n_tokens_total"] + 512 and d["n_ctx_train"] == 512
    assert d["prefill_curve"] and d["prefill_curve"][-1][0] >= d["n_tokens_loaded"]  # + BOS and the header
    assert d["load_s"] > 0 and d["answers"] == [] and d["accuracy"] is None  # no questions for this book
    assert "tokens loaded" in render_markdown(d)


def test_without_whole_the_context_stays_as_the_server_wants(model):
    worker, rec = make_worker()
    try:
        cfg = SessionConfig(
            str(model), n_ctx=768, n_threads=1, n_batch=256, skv=SkvParams(budget=256, sink=16, ring=32)
        )
        assert isinstance(rec.terminal(worker.submit(LoadModel(cfg))), ev.Finished)
        rid = worker.submit(OpenDocuments((Document.from_text("book.txt", TEXT),), reserve=64))
        rec.terminal(rid)
        docs = next(e for e in rec.of(rid) if isinstance(e, ev.DocumentsLoaded))
        assert docs.truncated and not [e for e in rec.of(rid) if isinstance(e, ev.ModelLoaded)]
    finally:
        assert worker.shutdown(10.0)
