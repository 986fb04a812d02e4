"""EPUB → text: the zip's XHTML documents in spine order (zipfile + ElementTree for the package files,
beautifulsoup4 for the XHTML). Each spine document is anchored by its title from the table of contents (EPUB 3 nav
or EPUB 2 NCX) or, without one, "chapter N"."""

from __future__ import annotations

import posixpath
import zipfile
from pathlib import Path
from urllib.parse import unquote
from xml.etree import ElementTree

from engine.documents import DocumentError
from engine.readers import Extracted, TextBuilder, short_label
from engine.readers.html import walk_html

MAX_MEMBER_BYTES = 64 * 2**20  # one XHTML file larger than this is refused (a zip bomb, not a book)
_XHTML = ("application/xhtml+xml", "text/html")


def _read(zf: zipfile.ZipFile, name: str, book: str) -> bytes:
    try:
        with zf.open(name) as f:
            data = f.read(MAX_MEMBER_BYTES + 1)
    except KeyError:
        raise DocumentError(
            f"{book} is not a valid EPUB ({name} is missing): check that the file is complete"
        ) from None
    if len(data) > MAX_MEMBER_BYTES:
        raise DocumentError(
            f"{book}: {name} is larger than {MAX_MEMBER_BYTES >> 20} MiB: this is not a normal book"
        )
    return data


def _xml(data: bytes, name: str, book: str) -> ElementTree.Element:
    try:
        return ElementTree.fromstring(data)
    except ElementTree.ParseError as e:
        raise DocumentError(
            f"{book} is not a valid EPUB ({name}: {e}): check that the file is complete"
        ) from None


def _join(base: str, href: str) -> str:
    """A zip member name from an href relative to the folder of base (fragment dropped)."""
    href = unquote(href.split("#", 1)[0])
    return posixpath.normpath(posixpath.join(posixpath.dirname(base), href)) if href else ""


def _toc_titles(
    zf: zipfile.ZipFile, opf: str, items: dict[str, tuple[str, str, str]], spine_toc: str, book: str
) -> dict[str, str]:
    """member name → first title the table of contents gives it (empty when the book has no usable toc)."""
    titles: dict[str, str] = {}
    nav = next((href for href, _, props in items.values() if "nav" in props.split()), None)
    if nav is not None:
        from bs4 import BeautifulSoup

        soup = BeautifulSoup(_read(zf, nav, book), "html.parser")
        tocs = [n for n in soup.find_all("nav") if "toc" in str(n.get("epub:type", "")).split()]
        for a in (tocs[0] if tocs else soup).find_all("a", href=True):
            titles.setdefault(_join(nav, a["href"]), short_label(a.get_text(" ")))
    elif spine_toc in items:
        ncx = items[spine_toc][0]
        root = _xml(_read(zf, ncx, book), ncx, book)
        for point in root.iterfind(".//{*}navPoint"):
            label, content = point.find("{*}navLabel/{*}text"), point.find("{*}content")
            if label is not None and content is not None and content.get("src"):
                titles.setdefault(_join(ncx, content.get("src", "")), short_label(label.text or ""))
    return {k: v for k, v in titles.items() if v}


def read_epub(path: Path) -> Extracted:
    from bs4 import BeautifulSoup

    book = path.name
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise DocumentError(
            f"{book} is not a valid EPUB (not a zip archive): check that the file is complete"
        ) from None
    with zf:
        names = set(zf.namelist())
        container = _xml(_read(zf, "META-INF/container.xml", book), "container.xml", book)
        rootfile = container.find(".//{*}rootfile")
        if rootfile is None or not rootfile.get("full-path"):
            raise DocumentError(
                f"{book} is not a valid EPUB (no package file): check that the file is complete"
            )
        opf = rootfile.get("full-path", "")
        package = _xml(_read(zf, opf, book), opf, book)
        items = {  # id -> (member name, media type, properties)
            it.get("id", ""): (
                _join(opf, it.get("href", "")),
                it.get("media-type", ""),
                it.get("properties", ""),
            )
            for it in package.iterfind(".//{*}item")
        }
        spine = package.find("{*}spine")
        if spine is None:
            raise DocumentError(f"{book} is not a valid EPUB (no spine): check that the file is complete")
        if "META-INF/encryption.xml" in names and _encrypted(zf, book, [items[i][0] for i in items]):
            raise DocumentError(f"{book} is DRM-protected: open a copy without DRM")
        titles = _toc_titles(zf, opf, items, spine.get("toc", ""), book)
        tb = TextBuilder()
        n_chapter = 0
        for ref in spine.iterfind("{*}itemref"):
            member, media, _ = items.get(ref.get("idref", ""), ("", "", ""))
            if media not in _XHTML or member not in names:
                continue
            soup = BeautifulSoup(_read(zf, member, book), "html.parser")
            if not soup.get_text().strip():
                continue
            n_chapter += 1
            tb.brk(2)
            tb.anchor(titles.get(member) or f"chapter {n_chapter}")
            walk_html(soup.find("body") or soup, tb, headings=False)
    return tb.result()


def _encrypted(zf: zipfile.ZipFile, book: str, members: list[str]) -> bool:
    """True when encryption.xml covers a content document (font obfuscation alone is not DRM)."""
    root = _xml(_read(zf, "META-INF/encryption.xml", book), "encryption.xml", book)
    wanted = {m for m in members if m.endswith((".xhtml", ".html", ".htm", ".xml"))}
    for ref in root.iterfind(".//{*}CipherReference"):
        if unquote(ref.get("URI", "")) in wanted:
            return True
    return False
