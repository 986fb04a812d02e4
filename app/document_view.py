"""Document view with the retrieval heat map.

The whole text of every open document is shown in one read-only QPlainTextEdit (it lays out lazily, block by
block, so a 150k-token book scrolls smoothly). Shading uses ExtraSelections for the retrieved sentences only (a few
hundred at most), plus one selection that greys the text outside the context. The engine's sentence table maps
sentence id → (document, char span); `DocumentMap` turns that into view positions.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from engine.documents import Document

HEAT_REFRESH_MS = 120
HEAT_LEVELS = 24  # shades of the heat: a sentence's selection is rebuilt only when its shade changes
# characters of a document's text put in the view per turn of the event loop: a book's ~600k at once blocked the loop
# 60-100 ms (the text blocks made, then the first layout); the rest follows in pieces of this size
LOAD_CHUNK = 200_000
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


@dataclass(frozen=True, slots=True)
class LoadedDoc:
    document: Document  # the whole document, as read
    offset: int = 0  # char offset of the part given to the engine (a chosen range starts here)


class DocumentMap:
    """Where each document and sentence sits in the view's text."""

    def __init__(self, docs: list[LoadedDoc]) -> None:
        self.docs = docs
        self.bases: list[int] = []
        parts: list[str] = []
        pos = 0
        for i, d in enumerate(docs):
            header = ("\n\n" if i else "") + f"═══ {d.document.name} ═══\n\n"
            parts.append(header)
            pos += len(header)
            self.bases.append(pos)
            parts.append(d.document.text)
            pos += len(d.document.text)
        self.text = "".join(parts)
        # QTextDocument counts UTF-16 code units: a character beyond U+FFFF takes two positions there, one here
        self._astral = [m.start() for m in _ASTRAL.finditer(self.text)]
        self._astral_qt = [i + k for k, i in enumerate(self._astral)]
        self.sentences: dict[int, tuple[int, int, int]] = {}  # sentence id -> (doc, view start, view end)
        self.loaded_end: dict[int, int] = {}  # doc -> view position where the part in context ends

    def set_sentences(self, table: tuple[tuple[int, int, int, int], ...]) -> None:
        self.sentences = {}
        self.loaded_end = {}
        for sid, di, cs, ce in table:
            if 0 <= di < len(self.docs):
                base = self.bases[di] + self.docs[di].offset
                self.sentences[sid] = (di, base + cs, base + ce)
                self.loaded_end[di] = max(self.loaded_end.get(di, 0), base + ce)

    def qt(self, i: int) -> int:
        """Position in the view's QTextDocument of Python string index i."""
        return i + bisect.bisect_left(self._astral, i)

    def py(self, pos: int) -> int:
        """Python string index of a QTextDocument position (inside a surrogate pair: the character's index)."""
        return pos - bisect.bisect_left(self._astral_qt, pos)

    def location(self, sid: int) -> tuple[str, str, str]:
        """(document name, readable place, sentence text) of a sentence id."""
        di, s, e = self.sentences[sid]
        d = self.docs[di]
        return d.document.name, d.document.location(s - self.bases[di]), self.text[s:e].strip()


class DocumentView(QWidget):
    """Emits range_requested(doc index, char offset) when the user asks to load the document from the cursor."""

    range_requested = Signal(int, int)
    turn_requested = Signal(int, str)  # an earlier turn's sentence was clicked: (turn in the context, role)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("documentPane")
        self.map: DocumentMap | None = None
        # the conversation's index entries: sentence id -> (turn, role, text) (TurnEnded)
        self.turn_entries: dict[int, tuple[int, str, str]] = {}
        self.heat: dict[int, float] = {}  # sentence id -> accumulated weight for the current answer
        self.focus: tuple[tuple[int, float], ...] = ()  # sentences of the clicked step
        self._n_steps = 0
        self._sel_cache: dict[tuple, QTextEdit.ExtraSelection] = {}  # see refresh()
        self._rest: list | None = None  # [text, start] while a long text is still being put in the view
        self._pending_scroll: int | None = None  # a scroll_to asked for while the text loads
        self._colors = {"heat": "#ffb000", "focus": "#2f5bd3", "outside": "#98a0b0", "muted": "#5d6678"}

        self.title = QLabel("Document")
        self.title.setObjectName("paneTitle")
        self.banner = QLabel()
        self.banner.setObjectName("banner")
        self.banner.setProperty("level", "warn")
        self.banner.setWordWrap(True)
        self.banner.setContentsMargins(8, 6, 8, 6)
        self.banner.setAccessibleName("Context banner")
        self.banner.hide()
        self.range_button = QPushButton("Load from the cursor")
        self.range_button.setAccessibleName("Load the document from the text cursor")
        self.range_button.setToolTip(
            "Put the context's window where the text cursor is (click in the text first)"
        )
        self.range_button.clicked.connect(self._request_range)
        self.range_button.hide()

        self.text = QPlainTextEdit()
        self.text.setObjectName("documentText")
        self.text.setReadOnly(True)
        self.text.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse | Qt.TextInteractionFlag.TextSelectableByKeyboard
        )
        self.text.setAccessibleName("Document text")
        self.text.setPlaceholderText(
            "Drop a document anywhere in the window, or press Ctrl+O.\n\nTXT, Markdown, PDF, DOCX, HTML and EPUB."
        )
        self.text.setCenterOnScroll(True)
        self.text.document().setUndoRedoEnabled(False)  # read-only: the pieces of a long text need no undo

        self.list_title = QLabel("Sentences used for the answer")
        self.list_title.setObjectName("paneTitle")
        self.back_button = QPushButton("Whole answer")
        self.back_button.setAccessibleName("Show the sentences of the whole answer")
        self.back_button.clicked.connect(self.show_answer_sentences)
        self.back_button.hide()
        # a clicked word's sentences merged over the SKV layers, or one layer's
        self.layer_choice = QComboBox()
        self.layer_choice.setAccessibleName("Layer whose sentences are shown")
        self.layer_choice.setToolTip("Each SentenceKV layer selects its own sentences; merged = all of them")
        self.layer_choice.currentIndexChanged.connect(self._layer_chosen)
        self.layer_choice.hide()
        self._step: tuple[str, tuple, tuple] = ("", (), ())  # word, merged sentences, per-layer sentences
        self.top_list = QListWidget()
        self.top_list.setObjectName("topList")
        self.top_list.setAccessibleName("Retrieved sentences")
        self.top_list.setWordWrap(True)
        self.top_list.itemActivated.connect(self._jump)
        self.top_list.itemClicked.connect(self._jump)

        head = QHBoxLayout()
        head.addWidget(self.title, 1)
        head.addWidget(self.range_button)
        list_head = QHBoxLayout()
        list_head.addWidget(self.list_title, 1)
        list_head.addWidget(self.layer_choice)
        list_head.addWidget(self.back_button)
        lower = QWidget()
        lower_col = QVBoxLayout(lower)
        lower_col.setContentsMargins(0, 6, 0, 0)
        lower_col.addLayout(list_head)
        lower_col.addWidget(self.top_list, 1)
        upper = QWidget()
        upper_col = QVBoxLayout(upper)
        upper_col.setContentsMargins(0, 0, 0, 0)
        upper_col.addLayout(head)
        upper_col.addWidget(self.banner)
        upper_col.addWidget(self.text, 1)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(upper)
        split.addWidget(lower)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        split.setChildrenCollapsible(False)
        col = QVBoxLayout(self)
        col.setContentsMargins(12, 12, 12, 12)
        col.addWidget(split)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(HEAT_REFRESH_MS)
        self._timer.timeout.connect(self.refresh)

    # ------------------------------------------------------------------ documents

    def set_colors(self, colors: dict[str, str]) -> None:
        self._colors = colors
        self.refresh()

    def set_documents(self, docs: list[LoadedDoc]) -> None:
        self.map = DocumentMap(docs) if docs else None
        self.heat = {}
        self.focus = ()
        self._sel_cache = {}  # its cursors point into the text replaced here
        self._pending_scroll = None
        text = self.map.text if self.map else ""
        end = _piece_end(text, 0)
        self.text.setPlainText(text[:end])
        self._rest = None
        if end < len(text):
            rest = self._rest = [text, end]
            QTimer.singleShot(0, lambda: self._load_more(rest))
        self.title.setText(", ".join(d.document.name for d in docs) if docs else "Document")
        self.banner.hide()
        self.range_button.hide()
        self.top_list.clear()
        self.refresh()

    @property
    def loading(self) -> bool:
        """True while a long document's text is still being put in the view (a few turns of the event loop)."""
        return self._rest is not None

    def _load_more(self, rest: list) -> None:
        if self._rest is not rest:
            return  # another text replaced this one
        text, start = rest
        end = _piece_end(text, start)
        cur = QTextCursor(self.text.document())
        cur.movePosition(QTextCursor.MoveOperation.End)
        cur.insertText(text[start:end])
        if end < len(text):
            rest[1] = end
            QTimer.singleShot(0, lambda: self._load_more(rest))
            return
        self._rest = None
        self.refresh()
        if self._pending_scroll is not None:
            sid, self._pending_scroll = self._pending_scroll, None
            self.scroll_to(sid)

    def set_loaded(
        self, table: tuple[tuple[int, int, int, int], ...], n_loaded: int, n_total: int, truncated: bool
    ) -> None:
        """The engine's sentence table and what fits: marks the part in context."""
        if self.map is None:
            return
        self.map.set_sentences(table)
        if truncated:
            self.banner.setText(
                f"{n_loaded:,} of {n_total:,} tokens in context. The greyed text is not in the context: "
                "click where it should start and press “Load from the cursor”, or raise the context size."
            )
            self.banner.show()
        else:
            self.banner.hide()
        self.range_button.setVisible(truncated or any(d.offset for d in self.map.docs))
        self.refresh()

    def _request_range(self) -> None:
        if self.map is None:
            return
        pos = self.map.py(self.text.textCursor().position())
        di = 0
        for i, base in enumerate(self.map.bases):
            if pos >= base:
                di = i
        offset = max(0, min(pos - self.map.bases[di], len(self.map.docs[di].document.text)))
        self.range_requested.emit(di, offset)

    # ------------------------------------------------------------------ retrieval

    def clear_heat(self) -> None:
        self.heat = {}
        self.focus = ()
        self._n_steps = 0
        self.top_list.clear()
        self.back_button.hide()
        self.list_title.setText("Sentences used for the answer")
        self.refresh()

    def add_retrieval(self, sentences: tuple[tuple[int, float], ...]) -> None:
        """One decode step's sentences (id, weight); shading is refreshed at most every HEAT_REFRESH_MS."""
        self._n_steps += 1
        for sid, w in sentences:
            self.heat[sid] = self.heat.get(sid, 0.0) + w
        if not self._timer.isActive():
            self._timer.start()

    def set_heat(self, heat: dict[int, float], n_steps: int) -> None:
        self.heat = dict(heat)
        self._n_steps = n_steps
        self.focus = ()
        self.show_answer_sentences()

    def set_turn_entries(self, entries: tuple[tuple[int, int, str, str], ...]) -> None:
        """The conversation's sentences (sentence id, turn, role, text): earlier turns attended show in the list."""
        self.turn_entries = {sid: (turn, role, text) for sid, turn, role, text in entries}

    def _known(self, sid: int, current_turn: int = 0) -> bool:
        if self.map is not None and sid in self.map.sentences:
            return True
        entry = self.turn_entries.get(sid)
        return entry is not None and entry[0] != current_turn

    def top_sentences(self, n: int = 12, documents_only: bool = False) -> list[tuple[int, float]]:
        """Sentences by accumulated weight, as a fraction of the answer's steps: the documents' and earlier
        turns' (not the answer's own turn, the last one)."""
        if self.map is None or not self._n_steps:
            return []
        last = max((t for t, _, _ in self.turn_entries.values()), default=0)
        ranked = sorted(
            (
                (sid, w / self._n_steps)
                for sid, w in self.heat.items()
                if (sid in self.map.sentences) or (not documents_only and self._known(sid, last))
            ),
            key=lambda kv: (-kv[1], kv[0]),
        )
        return ranked[:n]

    def location(self, sid: int) -> tuple[str, str, str]:
        """(where, place, text) of a sentence id: a document's, or "you"/"answer" and "turn N" for a turn's."""
        entry = self.turn_entries.get(sid)
        if entry is not None and (self.map is None or sid not in self.map.sentences):
            turn, role, text = entry
            return ("you" if role == "user" else "answer"), f"turn {turn}", text
        assert self.map is not None
        return self.map.location(sid)

    def show_answer_sentences(self) -> None:
        self.focus = ()
        self.back_button.hide()
        self.layer_choice.hide()
        self.list_title.setText("Sentences used for the answer")
        self._fill_list(self.top_sentences())
        self.refresh()

    def show_step(
        self,
        token_text: str,
        sentences: tuple[tuple[int, float], ...],
        layers: tuple[tuple[int, tuple[tuple[int, float], ...]], ...] = (),
    ) -> None:
        """The sentences attended for one token (clicked in the answer), merged over the layers; with `layers`, a
        chooser shows one layer's instead. Lists them, marks them, scrolls to the first."""
        self._step = (token_text, sentences, layers)
        self.layer_choice.blockSignals(True)
        self.layer_choice.clear()
        self.layer_choice.addItems(["All layers"] + [f"Layer {lid}" for lid, _ in layers])
        self.layer_choice.setCurrentIndex(0)
        self.layer_choice.blockSignals(False)
        self.layer_choice.setVisible(bool(layers))
        self._show_focus(token_text, sentences)

    def _layer_chosen(self, index: int) -> None:
        word, merged, layers = self._step
        if index <= 0 or index > len(layers):
            self._show_focus(word, merged)
        else:
            self._show_focus(word, layers[index - 1][1])

    def _show_focus(self, token_text: str, sentences: tuple[tuple[int, float], ...]) -> None:
        self.focus = tuple(s for s in sentences if self._known(s[0]))
        word = token_text.strip() or token_text
        self.list_title.setText(f"Sentences read to write “{word}”")
        self.back_button.show()
        ranked = sorted(self.focus, key=lambda kv: (-kv[1], kv[0]))
        self._fill_list(ranked)
        self.refresh()
        if ranked:
            self.scroll_to(ranked[0][0])

    def _fill_list(self, ranked: list[tuple[int, float]]) -> None:
        self.top_list.clear()
        if self.map is None:
            return
        for sid, w in ranked:
            name, place, text = self.location(sid)
            short = text if len(text) <= 160 else text[:157] + "…"
            item = QListWidgetItem(f"{w:.0%}  ·  {name}, {place}\n{short}")
            item.setData(Qt.ItemDataRole.UserRole, sid)
            item.setToolTip(text)
            self.top_list.addItem(item)
        if not ranked:
            self.top_list.addItem(QListWidgetItem("No document sentences yet: ask a question."))

    def _jump(self, item: QListWidgetItem) -> None:
        sid = item.data(Qt.ItemDataRole.UserRole)
        if sid is None:
            return
        entry = self.turn_entries.get(int(sid))
        if entry is not None and (self.map is None or int(sid) not in self.map.sentences):
            self.turn_requested.emit(entry[0], entry[1])  # the chat scrolls to that message
        else:
            self.scroll_to(int(sid))

    def scroll_to(self, sid: int) -> None:
        if self.map is None or sid not in self.map.sentences:
            return
        if self.loading:
            self._pending_scroll = sid  # its position may not be in the view yet
            return
        _, s, e = self.map.sentences[sid]
        cur = self.text.textCursor()
        cur.setPosition(self.map.qt(s))
        self.text.setTextCursor(cur)
        self.text.centerCursor()

    def refresh(self) -> None:
        """Rebuild the ExtraSelections: grey outside the context, heat per retrieved sentence, focus outline.

        A long answer over a book shades ~1,000 sentences, refreshed while it streams: each selection is built once
        and reused while its span and colour stay (heat in HEAT_LEVELS steps), so a refresh costs Python only the
        sentences whose shade changed and Qt (which skips unchanged selections) only their repaint."""
        if self.map is None or self.loading:
            self._sel_cache = {}
            self.text.setExtraSelections([])  # while loading, the spans may reach past the text in the view
            return
        old, cache = self._sel_cache, {}
        doc = self.text.document()

        def sel(tag: tuple, start: int, end: int, colors: Callable[[], dict[str, QColor]]) -> None:
            """The selection of [start, end) looking like `tag` (kind, colour, shade), kept from the last refresh
            or built with colors()."""
            key = (tag, start, end)
            s = cache.get(key, old.get(key))
            if s is None:
                s = _selection(doc, self.map.qt(start), self.map.qt(end), **colors())
            cache[key] = s
            sels.append(s)

        sels: list[QTextEdit.ExtraSelection] = []
        outside = self._colors["outside"]
        for di, d in enumerate(self.map.docs):
            if di not in self.map.loaded_end and not self.map.sentences:
                continue
            start_in = self.map.bases[di] + d.offset
            end_in = self.map.loaded_end.get(di, start_in)
            end_doc = self.map.bases[di] + len(d.document.text)
            for a, b in ((self.map.bases[di], start_in), (end_in, end_doc)):
                if b > a:
                    sel(("outside", outside), a, b, lambda: {"foreground": QColor(outside)})
        if self.heat:
            top = max(self.heat.values())
            heat = self._colors["heat"]
            for sid, w in self.heat.items():
                span = self.map.sentences.get(sid)
                if span is not None:
                    level = round(HEAT_LEVELS * w / top)
                    sel(
                        ("heat", heat, level),
                        span[1],
                        span[2],
                        lambda level=level: {"background": _shade(heat, 0.12 + 0.58 * level / HEAT_LEVELS)},
                    )
        focus = self._colors["focus"]
        for sid, _w in self.focus:
            span = self.map.sentences.get(sid)
            if span is not None:
                sel(("focus", focus), span[1], span[2], lambda: {"underline": QColor(focus)})
        self._sel_cache = cache
        self.text.setExtraSelections(sels)


def _shade(color: str, alpha: float) -> QColor:
    c = QColor(color)
    c.setAlphaF(alpha)
    return c


def _selection(
    doc,
    start: int,
    end: int,
    background: QColor | None = None,
    foreground: QColor | None = None,
    underline: QColor | None = None,
) -> QTextEdit.ExtraSelection:
    sel = QTextEdit.ExtraSelection()
    cur = QTextCursor(doc)
    cur.setPosition(start)
    cur.setPosition(min(end, doc.characterCount() - 1), QTextCursor.MoveMode.KeepAnchor)
    fmt = QTextCharFormat()
    if background is not None:
        fmt.setBackground(background)
    if foreground is not None:
        fmt.setForeground(foreground)
    if underline is not None:
        fmt.setUnderlineStyle(QTextCharFormat.UnderlineStyle.SingleUnderline)
        fmt.setUnderlineColor(underline)
        fmt.setFontUnderline(True)
        fmt.setFontWeight(600)
    sel.cursor = cur
    sel.format = fmt
    return sel


def _piece_end(text: str, start: int) -> int:
    """Where the piece of `text` put in the view from `start` ends: LOAD_CHUNK characters on, back to a line end."""
    end = start + LOAD_CHUNK
    if end >= len(text):
        return len(text)
    nl = text.rfind("\n", start, end)
    return nl + 1 if nl > start else end
