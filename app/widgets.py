"""Small shared widgets: a message banner and a progress box with ETA and Cancel."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget


class Banner(QFrame):
    """One sentence for the user (info, warn or error) with a Dismiss button."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("banner")
        self.setProperty("level", "info")
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setAccessibleName("Message")
        self.actions: list[QPushButton] = []  # this message's buttons (show_message(..., actions=...))
        close = QPushButton("Dismiss")
        close.setAccessibleName("Dismiss the message")
        close.clicked.connect(self.hide)
        self._row = QHBoxLayout(self)
        self._row.setContentsMargins(10, 6, 6, 6)
        self._row.addWidget(self.label, 1)
        self._row.addWidget(close)
        self.hide()

    def show_message(self, text: str, level: str = "error", actions: tuple = ()) -> None:
        """`actions`: (label, callback) buttons beside Dismiss; a button hides the banner, then calls back."""
        for b in self.actions:
            self._row.removeWidget(b)
            b.deleteLater()
        self.actions = []
        for i, (label, callback) in enumerate(actions):
            b = QPushButton(label)
            b.clicked.connect(self.hide)
            b.clicked.connect(lambda _=False, cb=callback: cb())
            self._row.insertWidget(1 + i, b)
            self.actions.append(b)
        text = " ".join(text.split())
        if text and text[0].islower():
            text = text[0].upper() + text[1:]
        if text and text[-1] not in ".!?":
            text += "."
        self.label.setText(text)
        self.setProperty("level", level)
        self.style().unpolish(self)
        self.style().polish(self)
        self.show()

    def text(self) -> str:
        return "" if self.isHidden() else self.label.text()


def fmt_eta(seconds: float) -> str:
    if seconds < 0:
        return "estimating time left"
    if seconds < 60:
        return f"about {max(1, round(seconds))} s left"
    return f"about {seconds / 60:.0f} min left"


class ProgressBox(QFrame):
    cancel_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("progressBox")
        self.label = QLabel()
        self.label.setAccessibleName("Progress")
        self.bar = QProgressBar()
        self.bar.setAccessibleName("Progress bar")
        self.bar.setTextVisible(False)
        self.bar.setFixedHeight(8)
        self.cancel = QPushButton("Cancel")
        self.cancel.setAccessibleName("Cancel the running task")
        self.cancel.clicked.connect(self.cancel_requested)
        top = QHBoxLayout()
        top.addWidget(self.label, 1)
        top.addWidget(self.cancel)
        col = QVBoxLayout(self)
        col.setContentsMargins(12, 8, 12, 10)
        col.addLayout(top)
        col.addWidget(self.bar)
        self.hide()

    def show_busy(self, text: str) -> None:
        self.label.setText(text)
        self.bar.setRange(0, 0)
        self.show()

    def show_progress(self, text: str, done: int, total: int, eta_s: float) -> None:
        self.label.setText(f"{text} {done:,} of {total:,} tokens · {fmt_eta(eta_s)}")
        self.bar.setRange(0, max(1, total))
        self.bar.setValue(done)
        self.show()
