"""DOCX → text (python-docx): one anchor per paragraph ("paragraph N", inside "section <heading>" once a heading
has been seen) and per table; paragraphs are separated by a blank line, table rows by a line break."""

from __future__ import annotations

from pathlib import Path

from engine.readers import Extracted, short_label


def _is_heading(paragraph) -> bool:
    try:
        name = (paragraph.style.name or "").lower() if paragraph.style is not None else ""
    except (KeyError, AttributeError):  # a style id missing from styles.xml
        return False
    return name.startswith("heading") or name == "title"


def _table_text(table) -> str:
    rows = []
    for row in table.rows:
        cells, seen = [], set()
        for cell in row.cells:
            if id(cell._tc) in seen:  # a merged cell is returned once per grid column
                continue
            seen.add(id(cell._tc))
            cells.append(" ".join(cell.text.split()))
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)


def read_docx(path: Path) -> Extracted:
    import docx
    from docx.table import Table

    document = docx.Document(str(path))
    parts: list[str] = []
    anchors: list[tuple[int, str]] = []
    offset = 0
    section = ""
    n_par = n_table = 0
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            text = _table_text(block)
            if not text:
                continue
            n_table += 1
            label = f"section {section}, table {n_table}" if section else f"table {n_table}"
        else:
            text = block.text.strip()
            if not text:
                continue
            n_par += 1
            if _is_heading(block):
                section = short_label(text)
                label = f"section {section}"
            else:
                label = f"section {section}, paragraph {n_par}" if section else f"paragraph {n_par}"
        if parts:
            parts.append("\n\n")
            offset += 2
        anchors.append((offset, label))
        parts.append(text)
        offset += len(text)
    return "".join(parts), tuple(anchors)
