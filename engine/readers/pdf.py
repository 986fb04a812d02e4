"""PDF → text with one "page N" anchor per page (pypdf). No OCR: a PDF without a text layer is refused clearly."""

from __future__ import annotations

import logging
from pathlib import Path

from engine.documents import DocumentError
from engine.readers import Extracted


def read_pdf(path: Path) -> Extracted:
    from pypdf.errors import FileNotDecryptedError, PdfReadError

    log = logging.getLogger("pypdf")
    level = log.level
    log.setLevel(logging.ERROR)  # damaged-but-readable files warn on every object
    try:
        return _extract(path)
    except FileNotDecryptedError:
        raise DocumentError(
            f"{path.name} is password-protected: remove the password and open it again"
        ) from None
    except PdfReadError as e:
        raise DocumentError(
            f"{path.name} is not a readable PDF ({e}): check that the file is complete"
        ) from None
    finally:
        log.setLevel(level)


def _extract(path: Path) -> Extracted:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError

    reader = PdfReader(path)
    if reader.is_encrypted:
        # many PDFs are encrypted with an empty user password (an owner password only restricts printing)
        try:
            ok = reader.decrypt("")
        except DependencyError:
            raise DocumentError(
                f"{path.name} is encrypted with AES and the 'cryptography' package is missing: reinstall the app"
            ) from None
        if not ok:
            raise DocumentError(f"{path.name} is password-protected: remove the password and open it again")
    pages = reader.pages
    if len(pages) == 0:
        raise DocumentError(f"{path.name} has no pages: open another PDF")
    parts: list[str] = []
    anchors: list[tuple[int, str]] = []
    offset = 0
    for i, page in enumerate(pages):
        page_text = (page.extract_text() or "").strip("\n")
        if not page_text.strip():
            continue  # a blank page: its neighbours keep their own anchors
        if parts:
            parts.append("\n\n")
            offset += 2
        anchors.append((offset, f"page {i + 1}"))
        parts.append(page_text)
        offset += len(page_text)
    if not anchors:
        raise DocumentError(f"{path.name} has no text layer (scanned?): run OCR first")
    return "".join(parts), tuple(anchors)
