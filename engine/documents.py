"""Documents: files → text plus a map from character offsets to readable source locations.

Formats: plain text and Markdown (lines), PDF (pages), DOCX (sections, paragraphs, tables), HTML (sections) and EPUB
(chapters). The readers live in `engine/readers/`; this module picks one by extension, or by content for files
with no or an unknown extension, and turns every failure into a `DocumentError` with one clear sentence.
"""

from __future__ import annotations

import bisect
import errno
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SUPPORTED = "TXT, MD, PDF, DOCX, HTML or EPUB"


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
    _anchor_starts: tuple[int, ...] = field(default=(), repr=False)

    @classmethod
    def from_text(
        cls, name: str, text: str, path: str = "", anchors: tuple[tuple[int, str], ...] = ()
    ) -> Document:
        starts = [0]
        pos = text.find("\n")
        while pos >= 0:
            starts.append(pos + 1)
            pos = text.find("\n", pos + 1)
        anchors = tuple(sorted(anchors, key=lambda a: a[0]))
        return cls(name, path, text, anchors, tuple(starts), tuple(a for a, _ in anchors))

    def line_of(self, offset: int) -> int:
        """1-based line number of a character offset."""
        return bisect.bisect_right(self._line_starts, max(0, offset))

    def location(self, offset: int) -> str:
        """A readable place: 'page 3, line 14' when anchors exist ('paragraph 12' alone when the anchored part is
        one line), else 'line 14'."""
        line = self.line_of(offset)
        if self.anchors:
            starts = self._anchor_starts or tuple(a for a, _ in self.anchors)
            i = bisect.bisect_right(starts, offset) - 1
            if i >= 0:
                a, label = self.anchors[i]
                end = starts[i + 1] if i + 1 < len(starts) else len(self.text)
                first = self.line_of(a)
                last_char = (
                    a + len(self.text[a:end].rstrip()) - 1
                )  # separators before the next anchor don't count
                if self.line_of(max(a, last_char)) == first:
                    return label
                return f"{label}, line {line - first + 1}"
        return f"line {line}"


Reader = Callable[[Path], "str | tuple[str, tuple[tuple[int, str], ...]]"]


def read_text(path: Path) -> str:
    data = path.read_bytes()
    if b"\x00" in data[:8192] and data[:2] not in (b"\xff\xfe", b"\xfe\xff"):
        raise DocumentError(f"{path.name} looks like a binary file, not text: open a {SUPPORTED} document")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            pass
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    # not valid UTF-8. Mostly UTF-8 with a few bad bytes: keep it, marking the bad bytes. No multi-byte UTF-8 at
    # all: a legacy 8-bit file, most often Windows-1252 (a superset of Latin-1 for the printable range).
    text = data.decode("utf-8", errors="replace")
    if any(ord(c) > 0x7F and c != "\ufffd" for c in text):
        return text
    return data.decode("cp1252", errors="replace")


def _reader(suffix: str) -> Reader | None:
    if suffix in (".txt", ".text", ".md", ".markdown", ""):
        return read_text
    if suffix == ".pdf":
        from engine.readers.pdf import read_pdf

        return read_pdf
    if suffix == ".docx":
        from engine.readers.docx import read_docx

        return read_docx
    if suffix in (".html", ".htm", ".xhtml"):
        from engine.readers.html import read_html

        return read_html
    if suffix == ".epub":
        from engine.readers.epub import read_epub

        return read_epub
    return None


def sniff_suffix(path: Path) -> str | None:
    """The suffix a file's content says it has (PDF, DOCX, EPUB, HTML), '' for text, None for other binaries."""
    with path.open("rb") as f:
        head = f.read(8192)
    if head.startswith(b"%PDF-"):
        return ".pdf"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = set(zf.namelist())
        except zipfile.BadZipFile:
            return None
        if "word/document.xml" in names:
            return ".docx"
        if "META-INF/container.xml" in names:
            return ".epub"
        return None
    low = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if low.startswith((b"<!doctype html", b"<html")):
        return ".html"
    if b"\x00" in head and head[:2] not in (b"\xff\xfe", b"\xfe\xff"):
        return None
    return ""


def normalize_newlines(
    text: str, anchors: tuple[tuple[int, str], ...] = ()
) -> tuple[str, tuple[tuple[int, str], ...]]:
    """CRLF and lone CR become LF (anchors move with the text): every offset the engine reports then means the
    same in the app's view, which shows CRLF as one line break."""
    if "\r" not in text:
        return text, anchors
    removed = [m.start() for m in re.finditer("\r\n", text)]  # each drops one character
    out = text.replace("\r\n", "\n").replace("\r", "\n")
    moved = tuple((off - bisect.bisect_left(removed, off), label) for off, label in anchors)
    return out, moved


def load_document(path: str | Path) -> Document:
    """Read a document file. Raises DocumentError with a one-line message on bad input."""
    p = Path(path)
    try:
        if not p.exists():
            raise DocumentError(f"{p} does not exist: check the path")
        if p.is_dir():
            raise DocumentError(f"{p} is a folder: open the files inside it")
        suffix = p.suffix.lower()
        reader = _reader(suffix)
        if reader is None or suffix == "":
            sniffed = sniff_suffix(p)
            if sniffed is None:
                raise DocumentError(
                    f"{p.name}: {suffix or 'this'} file type is not supported: open a {SUPPORTED} document"
                )
            reader = _reader(sniffed)
        assert reader is not None
        out = reader(p)
    except DocumentError:
        raise
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            raise DocumentError(
                f"{p.name[:40]}…: the path is too long for this system: move or rename the file"
            ) from None
        raise DocumentError(
            f"{p.name} could not be read ({e.strerror or e}): check its permissions"
        ) from None
    except Exception as e:  # noqa: BLE001 - a parser's own error on a damaged file becomes one clear sentence
        kind = p.suffix.lstrip(".").upper() or "a document"
        raise DocumentError(
            f"{p.name} could not be read as {kind} ({type(e).__name__}: {e}): check that the file is not damaged"
        ) from None
    text, anchors = (out, ()) if isinstance(out, str) else out
    text, anchors = normalize_newlines(text, anchors)
    if not text.strip():
        raise DocumentError(f"{p.name} has no text: open a document with text in it")
    return Document.from_text(p.name, text, str(p), anchors)
