"""Offscreen screenshots of seven states in the light and the dark theme (forced through the theme setting), written
to docs/screenshots/ for the README: a generator, not a test (`make screenshots` runs it; the suite does not). The
engine is the scripted worker, so the pictures are the same every run."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "resources" / "sample.md"
OUT = ROOT / "docs" / "screenshots"


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_screenshots_of_seven_states(qtbot, tmp_path, theme):
    from fake_worker import FakeWorker

    from app.main_window import MainWindow
    from app.settings import AppSettings

    OUT.mkdir(parents=True, exist_ok=True)
    w = MainWindow(
        model_path="/models/gemma-3-270m-it-Q4_K_M.gguf",
        bridge_factory=lambda on_event: FakeWorker(on_event, token_delay=0.002),
        settings=AppSettings(theme=theme),
        data_dir=tmp_path,
    )
    qtbot.addWidget(w)
    w.resize(1360, 820)
    w.show()
    qtbot.waitUntil(lambda: w.model_ready, timeout=5000)
    w.memory.set_model(w.model_info.name, 253_000_000)  # the scripted model has no file: show the real size

    def shot(name: str, widget=None) -> None:
        qtbot.wait(150)
        img = (widget or w).grab()
        assert not img.isNull()
        assert img.save(str(OUT / f"{theme}-{name}.png"))

    shot("1-empty")
    with qtbot.waitSignal(w.documents_finished, timeout=10_000):
        w.open_paths([str(SAMPLE)])
    shot("2-document-loaded")

    w.bridge._worker._delay = 0.05
    w.prompt_edit.setPlainText("What is the pass code for the reading room's network?")
    w.send()
    qtbot.waitUntil(lambda: len(w.chat.items[-1].text) > 20, timeout=5000)
    shot("3-answering")
    qtbot.waitSignal(w.answer_finished, timeout=10_000).wait()
    text = w.output_text()
    w.chat.click_position(w.chat.toPlainText().index("granite") + 2)
    shot("4-retrieval-shown")

    w.memory.set_details_visible(True)
    shot("5-memory-panel")
    w.memory.set_details_visible(False)

    dialog = w.open_settings()
    qtbot.waitUntil(dialog.isVisible, timeout=2000)
    shot("6-settings", dialog)
    dialog.reject()
    assert "granite-1851" in text

    # a follow-up: the earlier turn is in the context, and its question is among the sentences read
    w.bridge._worker._delay = 0.002
    w.prompt_edit.setPlainText("And where is that card kept?")
    with qtbot.waitSignal(w.answer_finished, timeout=10_000):
        w.send()
    assert any(
        w.doc_view.top_list.item(i).text().count("you, turn 1") for i in range(w.doc_view.top_list.count())
    )
    shot("7-follow-up")
    w.shutdown()


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_screenshot_of_the_first_run_model_choice(qtbot, tmp_path, theme, monkeypatch):
    """The first window when both built-in models are installed (the larger one as `.[large]` installs it)."""
    from PySide6.QtWidgets import QApplication

    from app.first_run import ModelChoice, first_run_choices
    from app.theme import apply_theme
    from engine import models

    monkeypatch.setattr(models, "installed_builtin_models", lambda: list(models.BUILTIN_MODELS.values())[:2])
    OUT.mkdir(parents=True, exist_ok=True)
    apply_theme(QApplication.instance(), theme)
    dlg = ModelChoice(first_run_choices(32768, 2))
    qtbot.addWidget(dlg)
    dlg.show()
    qtbot.wait(150)
    assert dlg.grab().save(str(OUT / f"{theme}-0-first-run.png"))
