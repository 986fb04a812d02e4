"""Documents: files → text plus a map from character offsets to readable source locations.

This first version reads plain text and Markdown; other formats plug in through `_READERS`.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path


class DocumentError(ValueError):
    """A file could not be read as a document (the message says what to do)."""


@dataclass(frozen=True, slots=True)
class Document:
    name: str  # file name shown to the user
    path: str
    text: str
    # sorted (char offset, label) anchors such as pages or chapters; empty for plain text
    anchors: tuple[tuple[int, str], ...] = ()
    _line_starts: tuple[int, ...] = field(default=(), repr=False)

    @classmethod
    def from_text(cls, name: str, text: str, path: str = "", anchors: tuple[tuple[int, str], ...] = ()) -> Document:
        starts = [0]
        pos = text.find("\n")
        while pos >= 0:
            starts.append(pos + 1)
            pos = text.find("\n", pos + 1)
        return cls(name, path, text, anchors, tuple(starts))

    def line_of(self, offset: int) -> int:
        """1-based line number of a character offset."""
        return bisect.bisect_right(self._line_starts, max(0, offset))

    def location(self, offset: int) -> str:
        """A readable place: 'page 3, line 14' when anchors exist, else 'line 14'."""
        line = self.line_of(offset)
        if self.anchors:
            i = bisect.bisect_right([a for a, _ in self.anchors], offset) - 1
            if i >= 0:
                a, label = self.anchors[i]
                return f"{label}, line {line - self.line_of(a) + 1}"
        return f"line {line}"


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise DocumentError(f"{path.name} looks like a binary file, not text: open a TXT, MD or PDF document")
    for enc in ("utf-8-sig", "utf-16") if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ("utf-8-sig",):
        try:
            return data.decode(enc)
        except UnicodeDecodeError:
            continue
    # not valid UTF-8: keep every byte readable rather than refusing the file
    return data.decode("utf-8", errors="replace")


_READERS = {".txt": _read_text, ".md": _read_text, ".markdown": _read_text, ".text": _read_text, "": _read_text}


def load_document(path: str | Path) -> Document:
    """Read a document file. Raises DocumentError with a one-line message on bad input."""
    p = Path(path)
    if not p.exists():
        raise DocumentError(f"{p} does not exist: check the path")
    if p.is_dir():
        raise DocumentError(f"{p} is a folder: open the files inside it")
    reader = _READERS.get(p.suffix.lower())
    if reader is None:
        raise DocumentError(f"{p.name}: {p.suffix} files are not supported yet: open a TXT or MD document")
    try:
        text = reader(p)
    except OSError as e:
        raise DocumentError(f"{p.name} could not be read ({e.strerror or e}): check its permissions") from None
    if not text.strip():
        raise DocumentError(f"{p.name} has no text: open a document with text in it")
    return Document.from_text(p.name, text, str(p))
