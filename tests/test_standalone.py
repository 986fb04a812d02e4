"""A clone stands alone: every file the code and the tests read lives in the repository.

The public-domain books the suite, the benchmarks and the demos use are in resources/books (no folder beside the
checkout is needed); no source file points outside the checkout for data."""

from __future__ import annotations

import json
import re
from pathlib import Path

from engine.bench.report import BOOKS_DIR

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("engine", "app", "tests", "native/tools", "packaging")


def test_the_books_the_question_set_names_are_in_the_repository():
    assert BOOKS_DIR == ROOT / "resources" / "books"
    qs = json.loads((ROOT / "resources" / "eval" / "qa_questions.json").read_text())["questions"]
    books = {q["book"] for q in qs}
    assert len(books) == 5
    for b in sorted(books):
        text = (BOOKS_DIR / b).read_text(encoding="utf-8")
        assert "*** START OF" in text and len(text) > 100_000, b  # the whole Gutenberg file, header kept


def test_no_source_file_reads_a_folder_beside_the_checkout():
    pattern = re.compile(r"""\.\./shared|["']shared["']\s*/\s*["']data["']|parent\s*/\s*["']shared["']""")
    hits = []
    for top in SOURCES:
        for path in (ROOT / top).rglob("*.py"):
            if path == Path(__file__).resolve():
                continue
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if pattern.search(line):
                    hits.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not hits, "\n".join(hits)
