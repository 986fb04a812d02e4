"""Helpers for the app's UI tests on the scripted worker (fake_worker.py): open the sample document, ask."""

from __future__ import annotations

from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[2] / "resources" / "sample.md"


def open_sample(qtbot, w) -> None:
    with qtbot.waitSignal(w.documents_finished, timeout=10_000):
        w.open_paths([str(SAMPLE)])


def ask(qtbot, w, question: str = "What is the pass code?") -> str:
    w.prompt_edit.setPlainText(question)
    with qtbot.waitSignal(w.answer_finished, timeout=10_000) as answered:
        w.send()
    return answered.args[0]
