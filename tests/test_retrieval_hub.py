"""The retrieval panel does not rank a book's front matter (title, table of contents) first for questions that have
nothing to do with it.

Found in the app: with the start of a novel in the context, the panel's top sentence was the table of contents for
every question. The cause was the sink: the document's first entry reaches into the first tokens, whose keys draw
every query, and its vector (the mean of its keys) carried them; `exclude_sink` leaves the sink's keys out of the
vectors (not the product default yet: docs/BENCHMARKS.md, round 14). Real books, the default model."""

from __future__ import annotations

from dataclasses import replace

import pytest

from engine.bench.harness import load_book_text
from engine.documents import Document
from engine.params import DEFAULT_PARAMS
from engine.session import Session, SessionConfig

CASES = [
    (
        "frankenstein.txt",
        12_000,
        "_To Mrs. Saville",
        [
            "In which city is the writer of the first letter when he writes it?",
            "What does the writer feel playing upon his cheeks?",
            "What does the writer hope to discover near the pole?",
        ],
    ),
    (
        "alice_in_wonderland.txt",
        9_000,
        "CHAPTER I.\nDown the Rabbit-Hole",
        [
            "What did the White Rabbit take out of its waistcoat-pocket?",
            "What was written on the jar Alice took from a shelf?",
            "What did Alice find on the little three-legged table?",
        ],
    ),
]


def _front_matter_end(text: str, marker: str) -> int:
    i = text.find(marker)
    if marker.startswith("CHAPTER"):  # alice: the chapter heading after the contents list
        i = text.find(marker, i + 1)
    assert i > 0, marker
    return i


@pytest.mark.slow
@pytest.mark.parametrize(
    "book,n_chars,marker,questions", CASES, ids=[c[0].split("_")[0].split(".")[0] for c in CASES]
)
def test_front_matter_is_not_the_top_source(default_model_path, book, n_chars, marker, questions):
    text = load_book_text(book)[:n_chars]
    end = _front_matter_end(text, marker)
    params = replace(DEFAULT_PARAMS, budget=1024, exclude_sink=1)
    s = Session(SessionConfig(str(default_model_path), n_ctx=4096, n_threads=2, skv=params))
    try:
        s.load_documents([Document.from_text(book, text)])
        snap = s.snapshot()
        tops = []
        for q in questions:
            s.restore(snap)
            r = s.ask(q, max_tokens=12)
            top = s.retrieved(r.steps, top=1)
            assert top, q
            tops.append((q, s.span_of(top[0]["sentence"]).char_start, top[0]["text"][:60]))
        front = [t for t in tops if t[1] < end]
        assert not front, f"front matter ranked first: {front}"
    finally:
        s.close()
