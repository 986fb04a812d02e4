"""Readers for the formats behind `engine.documents.load_document`: each turns a file into (text, anchors).

Anchors are sorted (character offset, label) pairs such as (0, "page 1") or (812, "section Methods, paragraph 4");
`Document.location` turns an offset into "page 3, line 14". Readers raise `DocumentError` with one clear sentence;
any other exception from a parser is turned into one by `load_document`. Parsers are imported by each reader, late,
so opening a text file never pays for pypdf or python-docx.
"""

from __future__ import annotations

import re

Anchors = tuple[tuple[int, str], ...]
Extracted = tuple[str, Anchors]

_SPACES = re.compile(r"\s+")
MAX_LABEL_CHARS = 60  # headings used as labels are cut to this many characters


def short_label(text: str) -> str:
    """One line of at most MAX_LABEL_CHARS characters (an ellipsis marks a cut)."""
    text = " ".join(text.split())
    return text if len(text) <= MAX_LABEL_CHARS else text[: MAX_LABEL_CHARS - 1].rstrip() + "…"


class TextBuilder:
    """Accumulates text with collapsed whitespace, paragraph breaks and anchors placed where the next text starts.

    `brk(1)` asks for a line break and `brk(2)` for a blank line before the next text; breaks never lead or trail
    the result and never pile up beyond a blank line.
    """

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._len = 0
        self._brk = 0
        self._pending: list[str] = []
        self.anchors: list[tuple[int, str]] = []

    def brk(self, level: int) -> None:
        self._brk = max(self._brk, level)

    def line_break(self) -> None:
        """An explicit <br>: consecutive ones add up to a blank line."""
        self._brk = min(2, self._brk + 1)

    def anchor(self, label: str) -> None:
        """Anchor the next text to label (an anchor with no text after it is dropped)."""
        self._pending.append(label)

    def text(self, s: str, verbatim: bool = False) -> None:
        if not verbatim:
            s = _SPACES.sub(" ", s)
        if not s or (not verbatim and s == " " and (not self._parts or self._brk)):
            return
        if self._parts and self._brk:
            last = self._parts[-1].rstrip(" ")
            self._len -= len(self._parts[-1]) - len(last)
            self._parts[-1] = last
            self._emit("\n" * self._brk)
            if not verbatim:
                s = s.lstrip(" ")
        elif not verbatim and s[0] == " " and (not self._parts or self._parts[-1][-1:] in (" ", "\n")):
            s = s.lstrip(" ")
        self._brk = 0
        if not s:
            return
        for label in self._pending:
            self.anchors.append((self._len, label))
        self._pending.clear()
        self._emit(s)

    def _emit(self, s: str) -> None:
        self._parts.append(s)
        self._len += len(s)

    def result(self) -> Extracted:
        text = "".join(self._parts).rstrip()
        return text, tuple(self.anchors)
