"""Settings → Hugging Face download, against the loopback stand-in hub (tests/support/fake_hub.py) (never the real
internet): progress in the dialog, the downloaded file becomes the model, errors are one sentence in the dialog."""

from __future__ import annotations

import pytest
from fake_hub import FILE, REPO

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def dialog(qtbot):
    from app.settings import AppSettings
    from app.settings_dialog import SettingsDialog

    d = SettingsDialog(AppSettings())
    qtbot.addWidget(d)
    d.show()
    yield d
    d.download.stop()
    d.download.wait()


def test_download_from_the_settings_sets_the_model(qtbot, dialog, hub, payload):  # noqa: F811
    from pathlib import Path

    seen: list[tuple[int, int]] = []
    dialog.download.progress.connect(lambda d, t: seen.append((d, t)))
    dialog.hf_repo.setText(REPO)
    dialog.hf_file.setText(FILE)
    with qtbot.waitSignal(dialog.download.finished, timeout=30_000) as done:
        dialog.hf_button.click()
        assert dialog.hf_button.text() == "Stop" and dialog.hf_progress.isVisible()
    path = Path(done.args[0])
    assert path.read_bytes() == payload
    assert dialog.model_edit.text() == str(path) and dialog.value().model_path == str(path)
    assert seen and seen[-1] == (len(payload), len(payload))
    assert dialog.hf_progress.value() == 1000 and dialog.hf_button.text() == "Download"
    assert not dialog.error_label.isVisible()


def test_download_errors_are_one_sentence_in_the_dialog(qtbot, dialog, hub):  # noqa: F811
    dialog.hf_repo.setText(REPO)
    dialog.hf_file.setText("nope.gguf")
    with qtbot.waitSignal(dialog.download.failed, timeout=30_000):
        dialog.hf_button.click()
    text = dialog.error_label.text()
    assert dialog.error_label.isVisible() and "nope.gguf" in text and "\n" not in text
    assert not dialog.hf_progress.isVisible() and dialog.model_edit.text() == ""
    dialog.hf_repo.setText("")
    dialog.hf_button.click()
    assert "Give a Hugging Face repository" in dialog.error_label.text()
