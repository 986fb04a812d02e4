"""The product's promise on the built-in model: a detail question about a real book (not a needle) is answered from
the sentences SentenceKV retrieves. Qwen2.5-Coder-0.5B, ~2.3k tokens of Alice's Adventures in Wonderland around the
answer's sentence, budget 1024: `sentence` answers it like `full`; `window` (sink + recent tokens, the same budget)
cannot see the sentence and answers wrong. The grids behind it: `skv eval qa` (docs/BENCHMARKS.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.documents import Document
from engine.params import Policy, SkvParams
from engine.session import Session, SessionConfig

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_sentence_answers_a_book_detail_that_window_cannot(default_model_path):
    from engine.bench.harness import load_book_text

    q = next(
        q
        for q in json.loads((ROOT / "resources" / "eval" / "qa_questions.json").read_text())["questions"]
        if q["id"] == "alice-09"
    )  # the crimson velvet cushion of the King's crown
    text = load_book_text(q["book"])
    start = q["char_offset"] - 4000
    doc = Document.from_text(q["book"], text[start : start + 9000])
    s = Session(SessionConfig(str(default_model_path), n_ctx=3072, n_threads=2, skv=SkvParams(budget=1024)))
    try:
        s.load_documents([doc], reserve=300)
        assert s.n_doc_tokens > 2 * 1024, "the budget must see less than half of the document"
        snap = s.snapshot()
        answers = {}
        for policy in (Policy.FULL, Policy.SENTENCE, Policy.WINDOW):
            s.restore(snap)
            s.set_params(SkvParams(policy, 1024))
            r = s.ask(q["question"], max_tokens=32)
            answers[policy] = (r.answer.lower(), r)
        assert "crimson" in answers[Policy.FULL][0], answers
        assert "crimson" in answers[Policy.SENTENCE][0], answers
        assert "crimson" not in answers[Policy.WINDOW][0], answers
        # and sentence read it where it is: the source sentence was attended while answering
        src = [i for i, sp in enumerate(s.spans) if sp.doc == 0 and "crimson velvet cushion" in sp.text]
        assert src, "the source sentence is in the context"
        attended = {sid for st in answers[Policy.SENTENCE][1].steps for sid, _ in st.counts}
        assert attended & set(src)
    finally:
        s.close()
