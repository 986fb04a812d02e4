"""HTML → visible text (beautifulsoup4 with the standard library's html.parser); headings become anchors."""

from __future__ import annotations

from pathlib import Path

from engine.readers import Extracted, TextBuilder, short_label

# elements whose content is never shown as text
_SKIP = frozenset(
    "head script style noscript template svg canvas iframe object select datalist audio video map".split()
)
# block elements: a paragraph break (2) or a line break (1) around them
_PARAGRAPHS = "p blockquote pre table figure section article aside header footer nav main address dl ul ol hr form fieldset"
_LINES = "div li dt dd tr caption figcaption legend details summary thead tbody tfoot body"
_BLOCK = {**dict.fromkeys(_PARAGRAPHS.split(), 2), **dict.fromkeys(_LINES.split(), 1)}
HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})


def _hidden(tag) -> bool:
    if tag.has_attr("hidden") or tag.get("aria-hidden") == "true":
        return True
    style = str(tag.get("style", "")).replace(" ", "").lower()
    return "display:none" in style or "visibility:hidden" in style


def walk_html(root, tb: TextBuilder, headings: bool = True) -> None:
    """Append the visible text under root to tb; with headings, each h1-h6 anchors 'section <title>'.

    Iterative (no recursion limit on deeply nested pages). Text in <pre> keeps its whitespace.
    """
    from bs4.element import NavigableString, PreformattedString, Tag

    stack: list[tuple[object, bool]] = [(root, True)]
    n_pre = 0
    while stack:
        node, entering = stack.pop()
        if isinstance(node, NavigableString):
            if not isinstance(node, PreformattedString):  # comments, doctype, CDATA, processing instructions
                tb.text(str(node), verbatim=n_pre > 0)
            continue
        if not isinstance(node, Tag):
            continue
        name = (node.name or "").lower()
        if not entering:
            if name == "pre":
                n_pre -= 1
            if name in HEADINGS:
                tb.brk(2)
            elif name in _BLOCK:
                tb.brk(_BLOCK[name])
            continue
        if name in _SKIP or _hidden(node):
            continue
        if name == "br":
            tb.line_break()
            continue
        if name in ("td", "th") and node.find_previous_sibling(("td", "th")) is not None:
            tb.text(" | ")
        if name in HEADINGS:
            tb.brk(2)
            title = short_label(node.get_text(" "))
            if headings and title:
                tb.anchor(f"section {title}")
        elif name in _BLOCK:
            tb.brk(_BLOCK[name])
        if name == "pre":
            n_pre += 1
        stack.append((node, False))
        stack.extend((child, True) for child in reversed(node.contents))


def read_html(path: Path) -> Extracted:
    from bs4 import BeautifulSoup

    # bytes in: BeautifulSoup honours <meta charset> and the BOM, and guesses otherwise
    soup = BeautifulSoup(path.read_bytes(), "html.parser")
    tb = TextBuilder()
    walk_html(soup.body or soup, tb)
    return tb.result()
