"""Asking again gives the same answer: every ask starts from the exact state right after the documents (kept at the
first ask, restored with its SentenceKV selection seed), not from a tail removal, which is not exact on
sliding-window models and re-decodes tokens to make a new seed. Also across a saved-session restore."""

from __future__ import annotations

import numpy as np
import pytest
from skv_harness import book_text

from engine.documents import Document
from engine.params import Policy, SkvParams
from engine.session import Session, SessionConfig
from engine.session_store import SessionStore


def _ask(s: Session, q: str) -> tuple[list[int], np.ndarray, list]:
    r = s.ask(q, max_tokens=8, ignore_eos=True)
    sel = [
        [(x.entry, x.n_tokens) for x in s.skv.selection(li, h)]
        for li in range(len(s.skv.layers()))
        for h in range(s.skv.stats().n_head_kv)
    ]
    return r.tokens, np.array(s.logits(), dtype=np.float32), sel


def _repeat(model, n_ctx: int, n_chars: int, budget: int) -> None:
    s = Session(
        SessionConfig(str(model), n_ctx=n_ctx, n_threads=2, skv=SkvParams(Policy.SENTENCE, budget, 16, 32))
    )
    try:
        s.load_documents([Document.from_text("book.txt", book_text(n_chars=n_chars))], reserve=128)
        t1, l1, sel1 = _ask(s, "What happened at the river?")
        t2, _, _ = _ask(s, "Who is the narrator?")
        t3, l3, sel3 = _ask(s, "What happened at the river?")
        assert t3 == t1 and sel3 == sel1
        np.testing.assert_array_equal(l3, l1)
        assert len(set(map(tuple, [t1, t2]))) == 2 or t1 == t2  # the other question ran in between
    finally:
        s.close()


def test_repeated_ask_is_bit_identical_on_the_tiny_model(tiny_model_path):
    _repeat(tiny_model_path, 2048, 4000, 256)


def test_repeated_ask_is_bit_identical_on_gemma(gemma_model_path):
    # gemma-3 has sliding-window layers: a tail seq_rm there is lossy; the kept snapshot is not
    _repeat(gemma_model_path, 4096, 6000, 1024)


# more than 256 sentences: the first step's graph scores only the vectors on the device when it is built, so a
# restore must close the sentences before it (llama_skv_close_cached), as the prefill did
SHORT = " ".join(f"Line {i} is here by the old mill." for i in range(380))  # ~10 tokens per sentence


@pytest.mark.parametrize(("n_ctx", "text"), [(1024, "book"), (4096, SHORT)], ids=["60", "380"])
def test_saved_session_answers_like_the_fresh_prefill(tiny_model_path, tmp_path, n_ctx, text):
    if text == "book":
        text = book_text(n_chars=3000)  # here, not at collection: a missing books folder skips this case only
    store = SessionStore(tmp_path / "sessions", max_bytes=1 << 30)
    doc = Document.from_text("book.txt", text)
    cfg = SessionConfig(str(tiny_model_path), n_ctx=n_ctx, n_threads=2, skv=SkvParams(budget=256))
    fresh = Session(cfg)
    try:
        assert not fresh.load_documents([doc], reserve=64, store=store).restored
        t1, l1, sel1 = _ask(fresh, "Where is the mill?")
    finally:
        fresh.close()
    again = Session(cfg)
    try:
        assert again.load_documents([doc], reserve=64, store=store).restored
        n_sent = again.skv.stats().n_sentences
        assert n_sent > (256 if n_ctx > 1024 else 10), n_sent
        t2, l2, sel2 = _ask(again, "Where is the mill?")
    finally:
        again.close()
    assert t2 == t1 and sel2 == sel1
    np.testing.assert_array_equal(l2, l1)


@pytest.mark.parametrize("seed_len", [0, 3])
def test_a_query_seed_of_the_wrong_size_is_refused(tiny_model_path, seed_len):
    s = Session(SessionConfig(str(tiny_model_path), n_ctx=512, n_threads=1, skv=SkvParams(budget=256)))
    try:
        with pytest.raises(ValueError, match="does not fit"):
            s.skv.set_query_seed(b"\0\0\0\0" * seed_len)
    finally:
        s.close()
