"""Minimal main window: a prompt box, a Send button and a streamed completion (the full app is a later issue)."""

from __future__ import annotations

from PySide6.QtCore import QThread, Signal, Slot
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.model_worker import ModelWorker

DEFAULT_PROMPT = "The Eiffel Tower is located in the city of"


class MainWindow(QMainWindow):
    """Loads the model on a worker QThread at start-up; never blocks the GUI thread."""

    load_requested = Signal(str)
    generate_requested = Signal(str, int)
    answer_finished = Signal(str)  # full answer text, for callers such as --selftest and tests
    load_finished = Signal(bool)

    def __init__(self, model_path: str = "", max_tokens: int = 48):
        super().__init__()
        self.setWindowTitle("SentenceKV Desktop")
        self.resize(720, 480)
        self._max_tokens = max_tokens
        self._answer: list[str] = []
        self._create_widgets()

        self._thread = QThread(self)
        self._thread.setObjectName("model-worker")
        self._worker = ModelWorker()
        self._worker.moveToThread(self._thread)
        self._thread.finished.connect(self._worker.deleteLater)
        self.load_requested.connect(self._worker.load)
        self.generate_requested.connect(self._worker.generate)
        self._worker.loaded.connect(self.handle_loaded)
        self._worker.token.connect(self.handle_token)
        self._worker.finished.connect(self.handle_finished)
        self._worker.failed.connect(self.handle_failed)
        self._thread.start()
        self._status.setText("Loading model…")
        self.load_requested.emit(model_path)

    def _create_widgets(self) -> None:
        self._prompt = QLineEdit(DEFAULT_PROMPT)
        self._prompt.returnPressed.connect(self.send)
        self._send = QPushButton("Send")
        self._send.setEnabled(False)
        self._send.clicked.connect(self.send)
        self._stop = QPushButton("Stop")
        self._stop.setEnabled(False)
        self._stop.clicked.connect(lambda: self._worker.request_stop())
        self._output = QPlainTextEdit()
        self._output.setReadOnly(True)
        self._status = QLabel()
        row = QHBoxLayout()
        row.addWidget(self._prompt, 1)
        row.addWidget(self._send)
        row.addWidget(self._stop)
        col = QVBoxLayout()
        col.addLayout(row)
        col.addWidget(self._output, 1)
        col.addWidget(self._status)
        central = QWidget()
        central.setLayout(col)
        self.setCentralWidget(central)

    # --- public API (also used by tests) ---
    @property
    def prompt_edit(self) -> QLineEdit:
        return self._prompt

    @property
    def send_button(self) -> QPushButton:
        return self._send

    def output_text(self) -> str:
        return self._output.toPlainText()

    @Slot()
    def send(self) -> None:
        prompt = self._prompt.text()
        if not prompt.strip() or not self._send.isEnabled():
            return
        self._answer = []
        self._output.setPlainText(prompt)
        self._send.setEnabled(False)
        self._stop.setEnabled(True)
        self._status.setText("Generating…")
        self.generate_requested.emit(prompt, self._max_tokens)

    # --- worker signals (queued: run on the GUI thread) ---
    @Slot(str)
    def handle_loaded(self, name: str) -> None:
        self._status.setText(f"Model: {name}")
        self._send.setEnabled(True)
        self.load_finished.emit(True)

    @Slot(str)
    def handle_token(self, text: str) -> None:
        self._answer.append(text)
        self._output.moveCursor(QTextCursor.MoveOperation.End)
        self._output.insertPlainText(text)

    @Slot(str)
    def handle_finished(self, reason: str) -> None:
        self._send.setEnabled(True)
        self._stop.setEnabled(False)
        self._status.setText("Stopped." if reason == "stopped" else "Done.")
        self.answer_finished.emit("".join(self._answer))

    @Slot(str)
    def handle_failed(self, message: str) -> None:
        loading = self._status.text().startswith("Loading")
        self._send.setEnabled(not loading)
        self._stop.setEnabled(False)
        self._status.setText(f"Error: {message}")
        if loading:
            self.load_finished.emit(False)
        else:
            self.answer_finished.emit("")

    def status_text(self) -> str:
        return self._status.text()

    def shutdown(self) -> None:
        """Stop generation, free the model on its thread and join the thread (idempotent)."""
        if self._thread.isRunning():
            self._worker.request_stop()
            self._thread.quit()
            self._thread.wait(30_000)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt override
        self.shutdown()
        super().closeEvent(event)
