"""Document readers on real files written in the tests with real libraries (fpdf2, pypdf, python-docx, zipfile)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from engine.documents import Document, DocumentError, load_document

DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


# ----------------------------------------------------------------------------------------------- fixture writers


def write_pdf(path: Path, pages: list[list[str]], unicode_font: bool = False) -> Path:
    from fpdf import FPDF

    pdf = FPDF()
    if unicode_font:
        pdf.add_font("dejavu", "", str(DEJAVU))
        pdf.set_font("dejavu", size=12)
    else:
        pdf.set_font("helvetica", size=12)
    for lines in pages:
        pdf.add_page()
        for line in lines:
            pdf.cell(0, 10, line, new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))
    return path


def write_docx(path: Path) -> Path:
    import docx

    d = docx.Document()
    d.add_paragraph("An opening paragraph before any heading.")
    d.add_heading("Methods", level=1)
    d.add_paragraph("We measured the first thing.")
    d.add_paragraph("")  # empty paragraphs are not counted
    p = d.add_paragraph("Second line follows.")
    p.add_run().add_break()
    p.add_run("And the third, after a soft break.")
    table = d.add_table(rows=2, cols=2)
    for r, row in enumerate([("name", "value"), ("alpha", "42")]):
        for c, v in enumerate(row):
            table.cell(r, c).text = v
    d.add_heading("Results ünïcødé", level=2)
    d.add_paragraph("The pass key is 7341.")
    d.save(str(path))
    return path


CHAPTER = """<?xml version="1.0" encoding="utf-8"?>
<html xmlns="http://www.w3.org/1999/xhtml" xmlns:epub="http://www.idpf.org/2007/ops">
<head><title>{title}</title><style>p {{ color: red }}</style></head>
<body><h1>{title}</h1><p>{body}</p></body></html>"""


def write_epub(path: Path, chapters: list[tuple[str, str]], toc: str = "nav", encrypt: bool = False) -> Path:
    """An EPUB with one XHTML file per chapter; toc is 'nav' (EPUB 3), 'ncx' (EPUB 2) or 'none'."""
    manifest = "".join(
        f'<item id="c{i}" href="text/c{i}.xhtml" media-type="application/xhtml+xml"/>'
        for i in range(len(chapters))
    )
    spine = "".join(f'<itemref idref="c{i}"/>' for i in range(len(chapters)))
    toc_attr = ""
    files: dict[str, str] = {}
    if toc == "nav":
        manifest += '<item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>'
        links = "".join(
            f'<li><a href="text/c{i}.xhtml#top">{t}</a></li>' for i, (t, _) in enumerate(chapters)
        )
        files["OEBPS/nav.xhtml"] = (
            '<html xmlns="http://www.w3.org/1999/xhtml" xmlns:epub="http://www.idpf.org/2007/ops"><body>'
            f'<nav epub:type="toc"><ol>{links}</ol></nav></body></html>'
        )
    elif toc == "ncx":
        manifest += '<item id="ncx" href="toc.ncx" media-type="application/x-dtbncx+xml"/>'
        toc_attr = ' toc="ncx"'
        points = "".join(
            f'<navPoint id="p{i}"><navLabel><text>{t}</text></navLabel><content src="text/c{i}.xhtml"/></navPoint>'
            for i, (t, _) in enumerate(chapters)
        )
        files["OEBPS/toc.ncx"] = (
            f'<ncx xmlns="http://www.daisy.org/z3986/2005/ncx/"><navMap>{points}</navMap></ncx>'
        )
    files["OEBPS/content.opf"] = (
        '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
        f"<manifest>{manifest}</manifest><spine{toc_attr}>{spine}</spine></package>"
    )
    for i, (title, body) in enumerate(chapters):
        files[f"OEBPS/text/c{i}.xhtml"] = CHAPTER.format(title=title, body=body)
    if encrypt:
        files["META-INF/encryption.xml"] = (
            '<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container" '
            'xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData><enc:CipherData>'
            '<enc:CipherReference URI="OEBPS/text/c0.xhtml"/></enc:CipherData></enc:EncryptedData></encryption>'
        )
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        zf.writestr(
            "META-INF/container.xml",
            '<container xmlns="urn:oasis:names:tc:opendocument:xmlns:container" version="1.0"><rootfiles>'
            '<rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
            "</rootfiles></container>",
        )
        for name, text in files.items():
            zf.writestr(name, text)
    return path


def location_of(doc: Document, needle: str) -> str:
    offset = doc.text.index(needle)
    return doc.location(offset)


# ----------------------------------------------------------------------------------------------- text


def test_text_lines_are_locations(tmp_path: Path) -> None:
    p = tmp_path / "notes.md"
    p.write_text("# Title\n\nfirst line\nsecond line\n", encoding="utf-8")
    doc = load_document(p)
    assert doc.name == "notes.md" and doc.anchors == ()
    assert location_of(doc, "second") == "line 4"


def test_invalid_utf8_mostly_utf8_keeps_text_and_marks_bad_bytes(tmp_path: Path) -> None:
    p = tmp_path / "mixed.txt"
    p.write_bytes("café ".encode() + b"\xff" + b" end")
    doc = load_document(p)
    assert doc.text == "café \ufffd end"


def test_legacy_cp1252_text_is_decoded(tmp_path: Path) -> None:
    p = tmp_path / "legacy.txt"
    p.write_bytes("naïve “quotes” — déjà vu".encode("cp1252"))
    assert load_document(p).text == "naïve “quotes” — déjà vu"


def test_utf16_with_bom(tmp_path: Path) -> None:
    p = tmp_path / "wide.txt"
    p.write_bytes("hello wörld".encode("utf-16"))
    assert load_document(p).text == "hello wörld"


def test_unknown_extension_with_text_reads_as_text(tmp_path: Path) -> None:
    p = tmp_path / "server.log"
    p.write_text("started\nstopped\n")
    assert location_of(load_document(p), "stopped") == "line 2"


# ----------------------------------------------------------------------------------------------- errors


def test_empty_document_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "empty.txt"
    p.write_text("  \n\n")
    with pytest.raises(DocumentError, match="has no text"):
        load_document(p)


def test_binary_file_is_refused(tmp_path: Path) -> None:
    for name in ("image.txt", "image.png", "noext"):
        p = tmp_path / name
        p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
        with pytest.raises(DocumentError, match="binary|not supported"):
            load_document(p)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="does not exist"):
        load_document(tmp_path / "nope.pdf")
    with pytest.raises(DocumentError, match="is a folder"):
        load_document(tmp_path)


def test_damaged_files_get_one_clear_sentence(tmp_path: Path) -> None:
    for name, data in (
        ("bad.pdf", b"%PDF-1.4\ngarbage"),
        ("bad.docx", b"not a zip"),
        ("bad.epub", b"PK\x03\x04xx"),
    ):
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(DocumentError) as e:
            load_document(p)
        assert name in str(e.value) and "\n" not in str(e.value)


def test_unicode_and_long_paths(tmp_path: Path) -> None:
    deep = tmp_path
    for i in range(8):  # ~1.6 KB of path made of 2-byte characters, each name under NAME_MAX
        deep = deep / (f"{i}-" + "ü" * 90)
    deep.mkdir(parents=True)
    p = deep / "文書 — résumé.txt"
    p.write_text("Grüße aus Köln.\n", encoding="utf-8")
    doc = load_document(p)
    assert doc.name == "文書 — résumé.txt" and doc.text.startswith("Grüße")
    with pytest.raises(DocumentError, match="too long"):
        load_document(tmp_path / ("x" * 300 + ".txt"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path: Path) -> None:
    p = tmp_path / "secret.txt"
    p.write_text("x")
    p.chmod(0)
    with pytest.raises(DocumentError, match="permissions"):
        load_document(p)


# ----------------------------------------------------------------------------------------------- PDF


def test_pdf_pages_are_anchors(tmp_path: Path) -> None:
    p = write_pdf(
        tmp_path / "book.pdf", [["Page one text."], ["Second page, line one.", "The pass key is 7341."]]
    )
    doc = load_document(p)
    assert [label for _, label in doc.anchors] == ["page 1", "page 2"]
    assert location_of(doc, "Page one") == "page 1"
    assert location_of(doc, "The pass key") == "page 2, line 2"


@pytest.mark.skipif(not DEJAVU.exists(), reason="DejaVu Sans not installed")
def test_pdf_unicode_text(tmp_path: Path) -> None:
    doc = load_document(write_pdf(tmp_path / "u.pdf", [["Grüße, naïve café — Ωμέγα"]], unicode_font=True))
    assert "Grüße, naïve café — Ωμέγα" in doc.text


def test_pdf_without_text_layer_asks_for_ocr(tmp_path: Path) -> None:
    from pypdf import PdfWriter

    w = PdfWriter()
    w.add_blank_page(612, 792)
    w.add_blank_page(612, 792)
    p = tmp_path / "scan.pdf"
    w.write(str(p))
    with pytest.raises(DocumentError, match=r"has no text layer \(scanned\?\): run OCR first"):
        load_document(p)


@pytest.mark.parametrize("algorithm", ["RC4-128", "AES-256"])
def test_pdf_encrypted_with_empty_user_password_opens(tmp_path: Path, algorithm: str) -> None:
    from pypdf import PdfReader, PdfWriter

    src = write_pdf(tmp_path / "plain.pdf", [["Restricted but readable."]])
    w = PdfWriter(clone_from=PdfReader(src))
    w.encrypt(user_password="", owner_password="owner", algorithm=algorithm)
    p = tmp_path / "owner-only.pdf"
    w.write(str(p))
    assert "Restricted but readable." in load_document(p).text


def test_pdf_with_user_password_is_refused_clearly(tmp_path: Path) -> None:
    from pypdf import PdfReader, PdfWriter

    src = write_pdf(tmp_path / "plain.pdf", [["Secret."]])
    w = PdfWriter(clone_from=PdfReader(src))
    w.encrypt(user_password="hunter2", owner_password="owner", algorithm="AES-128")
    p = tmp_path / "locked.pdf"
    w.write(str(p))
    with pytest.raises(DocumentError, match="password-protected"):
        load_document(p)


# ----------------------------------------------------------------------------------------------- DOCX


def test_docx_paragraphs_sections_and_tables(tmp_path: Path) -> None:
    doc = load_document(write_docx(tmp_path / "report.docx"))
    assert location_of(doc, "An opening") == "paragraph 1"
    assert location_of(doc, "Methods") == "section Methods"
    assert location_of(doc, "We measured") == "section Methods, paragraph 3"
    assert location_of(doc, "Second line") == "section Methods, paragraph 4, line 1"
    assert location_of(doc, "And the third") == "section Methods, paragraph 4, line 2"
    assert "name | value\nalpha | 42" in doc.text
    assert location_of(doc, "alpha") == "section Methods, table 1, line 2"
    assert location_of(doc, "The pass key") == "section Results ünïcødé, paragraph 6"


def test_docx_detected_without_extension(tmp_path: Path) -> None:
    p = write_docx(tmp_path / "report.docx").rename(tmp_path / "report")
    assert "The pass key is 7341." in load_document(p).text


# ----------------------------------------------------------------------------------------------- HTML


def test_html_visible_text_and_heading_anchors(tmp_path: Path) -> None:
    p = tmp_path / "page.html"
    p.write_text(
        "<!doctype html><html><head><title>T</title><script>var hidden = 1;</script></head><body>"
        "<p>Intro   text\n  wrapped.</p><!-- a comment -->"
        "<h2>Second &amp; last</h2><div style='display: none'>invisible</div>"
        "<p>Line one<br>Line two</p><ul><li>item a</li><li>item b</li></ul>"
        "<pre>code   keeps\n  spacing</pre><table><tr><td>k</td><td>v</td></tr></table>"
        "<p>Ünïcödé — 文書.</p></body></html>",
        encoding="utf-8",
    )
    doc = load_document(p)
    assert "hidden" not in doc.text and "invisible" not in doc.text and "comment" not in doc.text
    assert doc.text.startswith("Intro text wrapped.")
    assert "Line one\nLine two" in doc.text and "item a\nitem b" in doc.text
    assert "code   keeps\n  spacing" in doc.text and "k | v" in doc.text
    assert location_of(doc, "Intro") == "line 1"
    assert location_of(doc, "Line two") == "section Second & last, line 4"
    assert "Ünïcödé — 文書." in doc.text


def test_html_charset_from_meta(tmp_path: Path) -> None:
    p = tmp_path / "latin.htm"
    p.write_bytes(
        '<html><head><meta charset="iso-8859-1"></head><body><p>déjà vu</p></body></html>'.encode("latin-1")
    )
    assert load_document(p).text == "déjà vu"


# ----------------------------------------------------------------------------------------------- EPUB


def test_epub_chapters_titled_from_nav(tmp_path: Path) -> None:
    p = write_epub(
        tmp_path / "book.epub", [("Loomings", "Call me Ishmael."), ("The Carpet-Bag", "I stuffed a shirt.")]
    )
    doc = load_document(p)
    assert "p { color" not in doc.text
    assert location_of(doc, "Call me") == "Loomings, line 3"
    assert location_of(doc, "I stuffed") == "The Carpet-Bag, line 3"


def test_epub2_ncx_titles(tmp_path: Path) -> None:
    doc = load_document(write_epub(tmp_path / "old.epub", [("One", "First."), ("Two", "Second.")], toc="ncx"))
    assert location_of(doc, "Second.") == "Two, line 3"


def test_epub_without_toc_numbers_chapters(tmp_path: Path) -> None:
    doc = load_document(write_epub(tmp_path / "bare.epub", [("A", "alpha."), ("B", "beta.")], toc="none"))
    assert [label for _, label in doc.anchors] == ["chapter 1", "chapter 2"]


def test_epub_with_drm_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="DRM"):
        load_document(write_epub(tmp_path / "drm.epub", [("A", "alpha.")], encrypt=True))


def test_epub_missing_container_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "broken.epub"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("mimetype", "application/epub+zip")
    with pytest.raises(DocumentError, match="not a valid EPUB"):
        load_document(p)


def test_crlf_and_cr_line_ends_become_lf_and_anchors_move_with_the_text(tmp_path):
    from engine.documents import normalize_newlines

    p = tmp_path / "dos.txt"
    p.write_bytes(b"First line.\r\nSecond line.\r\n\r\nThird, old Mac.\rFourth.")
    d = load_document(p)
    assert "\r" not in d.text and d.text == "First line.\nSecond line.\n\nThird, old Mac.\nFourth."
    assert d.line_of(d.text.index("Fourth")) == 5
    text, anchors = normalize_newlines("a\r\nb\r\nc", ((0, "one"), (3, "two"), (6, "three")))
    assert text == "a\nb\nc" and anchors == ((0, "one"), (2, "two"), (4, "three"))
    assert text[2] == "b" and text[4] == "c"
