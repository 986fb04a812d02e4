"""The first window's model choice: when more than one built-in model is installed and nothing was saved yet, the
window asks which one to load (each with its memory and speed estimate; the default preselected) before loading."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QButtonGroup,
    QDialog,
    QDialogButtonBox,
    QLabel,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)


class ModelChoice(QDialog):
    """One radio button per (setting value, label); `choice()` is the checked one's setting value."""

    def __init__(self, choices: list[tuple[str, str]], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Choose a model")
        self.setObjectName("modelChoice")
        self.setAccessibleName("Choose a model")
        col = QVBoxLayout(self)
        intro = QLabel(
            "Two built-in models are installed. Which one should answer? (You can change it later in Settings.)"
        )
        intro.setWordWrap(True)
        col.addWidget(intro)
        self.group = QButtonGroup(self)
        self.buttons: list[tuple[str, QRadioButton]] = []
        for i, (value, label) in enumerate(choices):
            b = QRadioButton(label)
            b.setAccessibleName(label)
            b.setChecked(i == 0)  # the default model comes first
            self.group.addButton(b, i)
            col.addWidget(b)
            self.buttons.append((value, b))
        box = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok)
        box.button(QDialogButtonBox.StandardButton.Ok).setText("Load this model")
        box.accepted.connect(self.accept)
        col.addWidget(box)

    def choice(self) -> str:
        for value, b in self.buttons:
            if b.isChecked():
                return value
        return ""


def first_run_choices(n_ctx: int, threads: int) -> list[tuple[str, str]]:
    """(setting value, label) of the installed built-in models, the default first ("" = the default's setting);
    empty when fewer than two are installed (nothing to choose)."""
    from app.settings import builtin_choices
    from engine.models import BUILTIN_PREFIX, DEFAULT_MODEL

    found = builtin_choices(n_ctx, threads)
    if len(found) < 2:
        return []
    found.sort(key=lambda kl: kl[0] != DEFAULT_MODEL)
    return [("" if k == DEFAULT_MODEL else BUILTIN_PREFIX + k, label) for k, label in found]
