"""Settings: one defaults table, stored with QSettings (the only place QSettings is used), and the dialog.

Which changes need what: policy/budget/sink/ring apply at once (SetParams); model, n_ctx, threads and GPU layers
reload the model (the documents are prefilled again); the theme applies at once.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields, replace

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

POLICIES = ("sentence", "chunk", "window", "full")
THEMES = ("system", "light", "dark")


@dataclass(frozen=True, slots=True)
class AppSettings:
    model_path: str = ""  # "" = the built-in default model
    n_ctx: int = 8192
    threads: int = max(1, min(8, (os.cpu_count() or 2) - 1))
    gpu_layers: int = 0
    policy: str = "sentence"
    budget: int = 1024
    sink: int = 32
    ring: int = 64
    max_tokens: int = 256
    theme: str = "system"

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown policy {self.policy!r}: use one of {', '.join(POLICIES)}")
        if self.theme not in THEMES:
            raise ValueError(f"unknown theme {self.theme!r}: use one of {', '.join(THEMES)}")
        if self.budget <= self.sink + self.ring:
            raise ValueError(
                f"budget {self.budget} must be larger than sink + ring ({self.sink} + {self.ring})"
            )

    def needs_reload(self, other: AppSettings) -> bool:
        return (self.model_path, self.n_ctx, self.threads, self.gpu_layers) != (
            other.model_path,
            other.n_ctx,
            other.threads,
            other.gpu_layers,
        )

    def params_differ(self, other: AppSettings) -> bool:
        return (self.policy, self.budget, self.sink, self.ring) != (
            other.policy,
            other.budget,
            other.sink,
            other.ring,
        )


DEFAULTS = AppSettings()


def load_settings(qs: QSettings) -> AppSettings:
    """Stored values over the defaults; a stored value of the wrong type or out of range falls back to default."""
    values = {}
    for f in fields(AppSettings):
        default = getattr(DEFAULTS, f.name)
        raw = qs.value(f.name, default)
        try:
            values[f.name] = int(raw) if isinstance(default, int) else str(raw)
        except (TypeError, ValueError):
            values[f.name] = default
    try:
        return AppSettings(**values)
    except ValueError:
        return DEFAULTS


def save_settings(qs: QSettings, s: AppSettings) -> None:
    for k, v in asdict(s).items():
        qs.setValue(k, v)
    qs.sync()


class SettingsDialog(QDialog):
    def __init__(self, current: AppSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.setObjectName("settingsDialog")
        self.setAccessibleName("Settings")
        self.setMinimumWidth(560)
        self._current = current

        self.model_edit = QLineEdit(current.model_path)
        self.model_edit.setPlaceholderText("Built-in: gemma-3-270m (Q4_K_M)")
        self.model_edit.setAccessibleName("Model file")
        browse = QPushButton("Browse…")
        browse.setAccessibleName("Choose a model file")
        browse.clicked.connect(self._browse)
        default = QPushButton("Default")
        default.setAccessibleName("Use the built-in model")
        default.clicked.connect(lambda: self.model_edit.setText(""))
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_edit, 1)
        model_row.addWidget(browse)
        model_row.addWidget(default)

        self.n_ctx = self._spin(256, 1 << 20, current.n_ctx, "Context size in tokens", step=1024)
        self.threads = self._spin(1, 256, current.threads, "CPU threads")
        self.gpu_layers = self._spin(0, 999, current.gpu_layers, "Layers offloaded to the GPU")
        self.policy = QComboBox()
        self.policy.addItems(
            ["sentence (SentenceKV)", "chunk (fixed chunks)", "window (sink + recent)", "full"]
        )
        self.policy.setCurrentIndex(POLICIES.index(current.policy))
        self.policy.setAccessibleName("Attention policy")
        self.budget = self._spin(2, 1 << 20, current.budget, "Token budget per step", step=128)
        self.sink = self._spin(0, 4096, current.sink, "Sink tokens")
        self.ring = self._spin(1, 4096, current.ring, "Recent tokens")
        self.max_tokens = self._spin(1, 8192, current.max_tokens, "Longest answer in tokens", step=64)
        self.theme = QComboBox()
        self.theme.addItems(["Follow the system", "Light", "Dark"])
        self.theme.setCurrentIndex(THEMES.index(current.theme))
        self.theme.setAccessibleName("Theme")

        form = QFormLayout()
        form.setSpacing(10)
        form.addRow(self._section("Model"))
        form.addRow("Model file", model_row)
        form.addRow("Context (tokens)", self.n_ctx)
        form.addRow("Threads", self.threads)
        form.addRow("GPU layers", self.gpu_layers)
        form.addRow(self._section("Retrieval (applies at once)"))
        form.addRow("Policy", self.policy)
        form.addRow("Budget (tokens)", self.budget)
        form.addRow("Sink", self.sink)
        form.addRow("Recent", self.ring)
        form.addRow("Answer length", self.max_tokens)
        form.addRow(self._section("Appearance"))
        form.addRow("Theme", self.theme)

        self.error_label = QLabel()
        self.error_label.setObjectName("errorText")
        self.error_label.setWordWrap(True)
        self.error_label.hide()
        self.note = QLabel("Changing the model, context, threads or GPU layers reloads the model.")
        self.note.setObjectName("hint")
        self.note.setWordWrap(True)

        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self._accept)
        buttons.rejected.connect(self.reject)
        self.buttons = buttons

        col = QVBoxLayout(self)
        col.setContentsMargins(20, 20, 20, 16)
        col.addLayout(form)
        col.addWidget(self.note)
        col.addWidget(self.error_label)
        col.addWidget(buttons)

    @staticmethod
    def _section(text: str) -> QLabel:
        label = QLabel(text)
        label.setObjectName("sectionTitle")
        return label

    @staticmethod
    def _spin(lo: int, hi: int, value: int, name: str, step: int = 1) -> QSpinBox:
        spin = QSpinBox()
        spin.setRange(lo, hi)
        spin.setValue(value)
        spin.setSingleStep(step)
        spin.setAccessibleName(name)
        return spin

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a model", "", "GGUF models (*.gguf)")
        if path:
            self.model_edit.setText(path)

    def value(self) -> AppSettings:
        """The settings in the dialog; raises ValueError with a clear message when they do not fit together."""
        return replace(
            self._current,
            model_path=self.model_edit.text().strip(),
            n_ctx=self.n_ctx.value(),
            threads=self.threads.value(),
            gpu_layers=self.gpu_layers.value(),
            policy=POLICIES[self.policy.currentIndex()],
            budget=self.budget.value(),
            sink=self.sink.value(),
            ring=self.ring.value(),
            max_tokens=self.max_tokens.value(),
            theme=THEMES[self.theme.currentIndex()],
        )

    def _accept(self) -> None:
        try:
            self.value()
        except ValueError as e:
            self.error_label.setText(str(e)[0].upper() + str(e)[1:] + ".")
            self.error_label.show()
            return
        self.accept()
