"""The window loads the model off the GUI thread and answers one prompt, offscreen (the window is the full
app)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)


def test_window_answers_one_prompt_with_tiny_model(qtbot, tiny_model_path, tmp_path):
    from PySide6.QtCore import Qt

    from app.main_window import MainWindow
    from app.settings import AppSettings

    settings = AppSettings(n_ctx=2048, threads=1, budget=256, sink=16, ring=32)
    window = MainWindow(model_path=str(tiny_model_path), max_tokens=6, settings=settings, data_dir=tmp_path)
    qtbot.addWidget(window)
    window.show()
    assert not window.send_button.isEnabled()  # still loading, and the GUI thread is free
    with qtbot.waitSignal(window.load_finished, timeout=60_000) as loaded:
        pass
    assert loaded.args == [True], window.status_text()
    window.prompt_edit.setPlainText("Once upon a time")
    with qtbot.waitSignal(window.answer_finished, timeout=60_000) as answered:
        qtbot.mouseClick(window.send_button, Qt.MouseButton.LeftButton)
    assert answered.args[0], window.status_text()
    assert window.output_text().startswith("You\nOnce upon a time")
    window.shutdown()


def test_window_reports_a_bad_model_path(qtbot, tmp_path):
    from app.main_window import MainWindow

    window = MainWindow(model_path=str(tmp_path / "missing.gguf"), data_dir=tmp_path)
    qtbot.addWidget(window)
    with qtbot.waitSignal(window.load_finished, timeout=60_000) as loaded:
        pass
    assert loaded.args == [False]
    assert "does not exist" in window.status_text()
    assert "Traceback" not in window.status_text()
    window.shutdown()


@pytest.mark.slow
def test_run_command_opens_window_and_answers_with_default_model(default_model_path, tmp_path):
    """`skv-desktop --selftest` (what `make run` starts) loads gemma-3-270m and answers, offscreen."""
    exe = Path(sys.executable).parent / "skv-desktop"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "app.main"]
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "SKV_DATA_DIR": str(tmp_path)}
    proc = subprocess.run(
        [*cmd, "--selftest", "--max-tokens", "8", "--timeout", "240"],
        capture_output=True,
        text=True,
        timeout=280,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("answer: ")
