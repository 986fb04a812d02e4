"""The conversation transcript: one framed block per message, answers rendered as Markdown while they stream, and
a click on a word of an answer mapped back to the token that produced it (for the retrieval view)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import (
    QColor,
    QFont,
    QMouseEvent,
    QTextBlockFormat,
    QTextCharFormat,
    QTextCursor,
    QTextDocument,
    QTextDocumentFragment,
    QTextFormat,
    QTextFrame,
    QTextFrameFormat,
)
from PySide6.QtWidgets import QTextBrowser, QTextEdit, QWidget

RENDER_INTERVAL_MS = 50  # a streaming answer is re-rendered at most this often
# GitHub Markdown, but HTML in a message stays text (a model's output never becomes live markup)
MARKDOWN = QTextDocument.MarkdownFeature.MarkdownNoHTML | QTextDocument.MarkdownFeature.MarkdownDialectGitHub


@dataclass(slots=True)
class ChatItem:
    role: str  # "user" or "assistant"
    text: str = ""
    token_starts: list[int] = field(default_factory=list)  # char offset in text where each token starts
    steps: dict[int, tuple[tuple[int, float], ...]] = field(default_factory=dict)  # token index -> retrieval
    # token index -> per SKV layer (layer id, its sentences): what "per layer" shows for a clicked word
    layer_steps: dict[int, tuple[tuple[int, tuple[tuple[int, float], ...]], ...]] = field(
        default_factory=dict
    )
    footer: str = ""  # e.g. "12.3 tok/s · first token 0.4 s"
    answer_ids: list[int] = field(default_factory=list)  # an answer's decoded tokens (to rebuild the context)
    reason: str = ""  # why an answer ended ("eos", "max_tokens", "stopped", ...)
    frame: QTextFrame | None = None
    body_start: int = 0  # document position where the rendered text starts

    def add_token(self, text: str) -> None:
        self.token_starts.append(len(self.text))
        self.text += text

    def token_at(self, raw_offset: int) -> int:
        """Index of the token covering a character offset of the raw text; -1 when there is none."""
        if not self.token_starts:
            return -1
        return max(0, bisect.bisect_right(self.token_starts, raw_offset) - 1)


def rendered_to_raw(raw: str, rendered: str, k: int) -> int:
    """Map offset k of the rendered plain text (Markdown removed) to an offset of the raw text: walk both in order,
    skipping raw characters that rendering removed (markup) and rendered characters that raw lacks (bullets)."""
    i = 0
    for j, ch in enumerate(rendered[: k + 1]):
        c = "\n" if ch in "\u2029\u2028" else ch
        found = raw.find(c, i, i + 48)
        if found < 0 and c == "\n":
            found = i if i < len(raw) else -1
        if j == k:
            return found if found >= 0 else min(i, max(0, len(raw) - 1))
        if found >= 0:
            i = found + 1
    return min(i, max(0, len(raw) - 1))


class ChatView(QTextBrowser):
    """word_clicked(item index, token index): the user clicked a word of an answer; edit_requested(item index): the
    user chose "Edit this question" on one of their messages (right-click)."""

    word_clicked = Signal(int, int)
    edit_requested = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("transcript")
        self.setAccessibleName("Conversation")
        self.setAccessibleDescription(
            "Messages; click a word of an answer to see the sentences it was based on"
        )
        self.setOpenLinks(False)
        self.setReadOnly(True)
        self.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse | Qt.TextInteractionFlag.TextSelectableByKeyboard
        )
        self.document().setDocumentMargin(14)
        self.items: list[ChatItem] = []
        self._colors = {
            "user_bubble": "#e8effd",
            "bot_bubble": "#ffffff",
            "muted": "#5d6678",
            "focus": "#2f5bd3",
        }
        self._render_timer = QTimer(self)
        self._render_timer.setSingleShot(True)
        self._render_timer.setInterval(RENDER_INTERVAL_MS)
        self._render_timer.timeout.connect(self._render_last)
        self._placeholder = ""

    # ------------------------------------------------------------------ content

    def set_colors(self, colors: dict[str, str]) -> None:
        self._colors = colors
        self.rebuild()

    def set_placeholder(self, html: str) -> None:
        self._placeholder = html
        if not self.items:
            self.rebuild()

    def clear_items(self) -> None:
        self.items = []
        self.rebuild()

    def add_item(self, item: ChatItem) -> int:
        if not self.items:
            self.document().clear()
        self.items.append(item)
        self._render(item, new=True)
        self._scroll_to_end()
        return len(self.items) - 1

    def append_token(self, text: str) -> None:
        """Add a token to the last (streaming) answer; rendering is coalesced."""
        self.items[-1].add_token(text)
        if not self._render_timer.isActive():
            self._render_timer.start()

    def finish_last(self, footer: str = "") -> None:
        self._render_timer.stop()
        if self.items:
            self.items[-1].footer = footer
            self._render_last()

    def remove_last(self) -> ChatItem | None:
        if not self.items:
            return None
        item = self.items.pop()
        self.rebuild()
        return item

    def rebuild(self) -> None:
        self.document().clear()
        self.setExtraSelections([])
        if not self.items and self._placeholder:
            self.setHtml(self._placeholder)
            return
        for item in self.items:
            self._render(item, new=True)
        self._scroll_to_end()

    def _render_last(self) -> None:
        if self.items:
            at_end = self.verticalScrollBar().value() >= self.verticalScrollBar().maximum() - 4
            self._render(self.items[-1], new=False)
            if at_end:
                self._scroll_to_end()

    def _render(self, item: ChatItem, new: bool) -> None:
        cur = QTextCursor(self.document())
        if new or item.frame is None:
            cur.movePosition(QTextCursor.MoveOperation.End)
            ff = QTextFrameFormat()
            ff.setBackground(QColor(self._colors["user_bubble" if item.role == "user" else "bot_bubble"]))
            ff.setPadding(10)
            ff.setBorder(0)
            ff.setTopMargin(6)
            ff.setBottomMargin(6)
            if item.role == "user":
                ff.setLeftMargin(60)
            else:
                ff.setRightMargin(24)
            item.frame = cur.insertFrame(ff)
        else:
            cur.setPosition(item.frame.firstPosition())
            cur.setPosition(item.frame.lastPosition(), QTextCursor.MoveMode.KeepAnchor)
            cur.removeSelectedText()
        head = QTextCharFormat()
        head.setFontWeight(QFont.Weight.DemiBold)
        head.setForeground(QColor(self._colors["muted"]))
        cur.setBlockFormat(QTextBlockFormat())
        cur.insertText("You" if item.role == "user" else "Assistant", head)
        cur.insertBlock(QTextBlockFormat(), QTextCharFormat())
        item.body_start = cur.position()
        text = item.text if item.text else ("…" if item.role == "assistant" else "")
        cur.insertFragment(QTextDocumentFragment.fromMarkdown(text, MARKDOWN))
        if item.footer:
            foot = QTextCharFormat()
            foot.setForeground(QColor(self._colors["muted"]))
            foot.setFontPointSize(max(7.0, self.font().pointSizeF() - 1))
            cur.insertBlock(QTextBlockFormat(), foot)
            cur.insertText(item.footer, foot)

    def scroll_to_item(self, index: int) -> None:
        """Bring message `index` into view (a click on an earlier turn's sentence in the retrieval panel)."""
        if 0 <= index < len(self.items) and self.items[index].frame is not None:
            cur = self.textCursor()
            cur.setPosition(self.items[index].frame.firstPosition())
            self.setTextCursor(cur)
            self.ensureCursorVisible()

    def _scroll_to_end(self) -> None:
        self.verticalScrollBar().setValue(self.verticalScrollBar().maximum())

    # ------------------------------------------------------------------ clicks → tokens

    def item_at(self, pos: int) -> int:
        for i, item in enumerate(self.items):
            if item.frame is not None and item.frame.firstPosition() <= pos <= item.frame.lastPosition():
                return i
        return -1

    def token_at_position(self, pos: int) -> tuple[int, int]:
        """(item index, token index) for a document position in an answer; (-1, -1) elsewhere."""
        i = self.item_at(pos)
        if i < 0 or self.items[i].role != "assistant" or pos < self.items[i].body_start:
            return -1, -1
        item = self.items[i]
        cur = QTextCursor(self.document())
        cur.setPosition(item.body_start)
        cur.setPosition(item.frame.lastPosition(), QTextCursor.MoveMode.KeepAnchor)
        rendered = cur.selectedText()
        k = pos - item.body_start
        if k >= len(rendered) or not item.text:
            return -1, -1
        return i, item.token_at(rendered_to_raw(item.text, rendered, k))

    def select_token(self, item_index: int, token_index: int) -> None:
        """Mark the clicked token's word in the transcript."""
        item = self.items[item_index]
        cur = QTextCursor(self.document())
        cur.setPosition(item.body_start)
        cur.setPosition(item.frame.lastPosition(), QTextCursor.MoveMode.KeepAnchor)
        rendered = cur.selectedText()
        start = item.token_starts[token_index]
        end = (
            item.token_starts[token_index + 1] if token_index + 1 < len(item.token_starts) else len(item.text)
        )
        first = last = -1
        for k in range(len(rendered)):
            raw = rendered_to_raw(item.text, rendered, k)
            if start <= raw < end:
                first = k if first < 0 else first
                last = k
            elif raw >= end:
                break
        sel = QTextEdit.ExtraSelection()
        fmt = QTextCharFormat()
        fmt.setBackground(QColor(self._colors["focus"]).lighter(100))
        fmt.setForeground(QColor("#ffffff"))
        fmt.setProperty(QTextFormat.Property.FullWidthSelection, False)
        sel.format = fmt
        c = QTextCursor(self.document())
        if first >= 0:
            c.setPosition(item.body_start + first)
            c.setPosition(item.body_start + last + 1, QTextCursor.MoveMode.KeepAnchor)
        sel.cursor = c
        self.setExtraSelections([sel] if first >= 0 else [])

    def click_position(self, pos: int) -> None:
        """Act as if the user clicked at document position pos (tests and keyboard use call this too)."""
        i, t = self.token_at_position(pos)
        if i >= 0 and t >= 0:
            self.select_token(i, t)
            self.word_clicked.emit(i, t)

    def contextMenuEvent(self, e) -> None:  # noqa: N802 - Qt override
        menu = self.createStandardContextMenu(e.pos())
        i = self.item_at(self.cursorForPosition(e.pos()).position())
        if 0 <= i < len(self.items) and self.items[i].role == "user":
            menu.addSeparator()
            menu.addAction("Edit this question", lambda: self.edit_requested.emit(i))
        menu.exec(e.globalPos())

    def mouseReleaseEvent(self, e: QMouseEvent) -> None:  # noqa: N802 - Qt override
        super().mouseReleaseEvent(e)
        if e.button() == Qt.MouseButton.LeftButton and not self.textCursor().hasSelection():
            self.click_position(self.cursorForPosition(e.position().toPoint()).position())

    def keyPressEvent(self, e) -> None:  # noqa: N802 - Qt override
        # keyboard users: Enter inspects the word at the text cursor
        if (
            e.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
            and e.modifiers() == Qt.KeyboardModifier.NoModifier
        ):
            self.click_position(self.textCursor().position())
            return
        super().keyPressEvent(e)
