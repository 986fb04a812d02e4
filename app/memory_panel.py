"""The memory and speed strip at the bottom of the window, with a details panel that opens above it."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine import events as ev

WARN_FRACTION = 0.85  # the context bar turns amber here, red when full


def fmt_bytes(n: int) -> str:
    if n <= 0:
        return "–"
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


class MemoryPanel(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.weights_bytes = 0
        self.last_memory: ev.MemoryEvent | None = None
        self.n_ctx = 0  # the context's size (the model's load, then memory events)
        self.last_stats: ev.StatsEvent | None = None

        strip = QFrame()
        strip.setObjectName("memoryStrip")
        row = QHBoxLayout(strip)
        row.setContentsMargins(12, 6, 12, 6)
        row.setSpacing(14)
        self.model_label = self._metric("No model", "Model")
        self.device_label = self._metric("Device –", "Device memory")
        self.host_label = self._metric("Host KV –", "Host memory for the KV cache")
        self.context_bar = QProgressBar()
        self.context_bar.setAccessibleName("Context fullness")
        self.context_bar.setTextVisible(False)
        self.context_bar.setFixedWidth(140)
        self.context_bar.setFixedHeight(10)
        self.context_bar.setRange(0, 1)
        self.context_bar.setValue(0)
        self.context_label = self._metric("Context –", "Context use")
        self.speed_label = self._metric("– tok/s", "Answer speed")
        self.details_button = QToolButton()
        self.details_button.setText("Memory ▴")
        self.details_button.setCheckable(True)
        self.details_button.setAccessibleName("Show memory details")
        self.details_button.toggled.connect(self.set_details_visible)
        for w in (self.model_label, self.device_label, self.host_label):
            row.addWidget(w)
        row.addStretch(1)
        row.addWidget(self.context_label)
        row.addWidget(self.context_bar)
        row.addWidget(self.speed_label)
        row.addWidget(self.details_button)

        self.details = QFrame()
        self.details.setObjectName("memoryDetails")
        grid = QGridLayout(self.details)
        grid.setContentsMargins(16, 10, 16, 10)
        grid.setHorizontalSpacing(28)
        grid.setVerticalSpacing(6)
        self._values: dict[str, QLabel] = {}
        rows = [
            ("weights", "Model weights (device)"),
            ("device", "SentenceKV vectors + staging (device)"),
            ("host", "Token keys and values (host RAM)"),
            ("full", "A full KV cache would need (device)"),
            ("saved", "Device memory saved"),
            ("context", "Context"),
            ("tok_s", "Answer speed"),
            ("ttft", "Time to first token"),
            ("prefill", "Document reading speed"),
        ]
        for i, (key, label) in enumerate(rows):
            name = QLabel(label)
            name.setObjectName("subtle")
            value = QLabel("–")
            value.setAccessibleName(label)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self._values[key] = value
            r, c = i % 5, (i // 5) * 2
            grid.addWidget(name, r, c)
            grid.addWidget(value, r, c + 1)
        grid.setColumnStretch(4, 1)
        self.details.hide()

        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(0)
        col.addWidget(self.details)
        col.addWidget(strip)

    @staticmethod
    def _metric(text: str, name: str) -> QLabel:
        label = QLabel(text)
        label.setObjectName("metric")
        label.setAccessibleName(name)
        return label

    def set_details_visible(self, on: bool) -> None:
        self.details.setVisible(on)
        self.details_button.setText("Memory ▾" if on else "Memory ▴")
        if self.details_button.isChecked() != on:
            self.details_button.setChecked(on)

    def set_model(self, name: str, weights_bytes: int) -> None:
        self.weights_bytes = weights_bytes
        size = f" · {fmt_bytes(weights_bytes)}" if weights_bytes > 0 else ""
        self.model_label.setText(f"{name}{size}" if name else "No model")
        self._values["weights"].setText(fmt_bytes(weights_bytes))

    def update_memory(self, m: ev.MemoryEvent) -> None:
        self.last_memory = m
        self.device_label.setText(f"Device {fmt_bytes(m.device_skv_bytes)}")
        self.host_label.setText(f"Host KV {fmt_bytes(m.host_kv_bytes)}")
        self.device_label.setToolTip("SentenceKV semantic vectors and staging on the compute device")
        parts = (
            f" (vectors {fmt_bytes(m.device_vec_bytes)} + staging {fmt_bytes(m.device_stage_bytes)})"
            if m.device_vec_bytes or m.device_stage_bytes
            else ""
        )
        self._values["device"].setText(fmt_bytes(m.device_skv_bytes) + parts)
        self._values["host"].setText(fmt_bytes(m.host_kv_bytes))
        self._values["full"].setText(fmt_bytes(m.full_kv_bytes))
        saved = m.full_kv_bytes - m.device_skv_bytes
        self._values["saved"].setText(
            f"{fmt_bytes(saved)} ({saved / m.full_kv_bytes:.0%})"
            if m.full_kv_bytes > 0 and saved > 0
            else "–"
        )
        self.show_context(m.n_past, m.n_ctx)

    def show_context(self, n_past: int, n_ctx: int) -> None:
        """The context strip: tokens held of the context (memory events, and the prefill as it runs)."""
        self.n_ctx = n_ctx
        n_ctx = max(1, n_ctx)
        frac = n_past / n_ctx
        self.context_bar.setRange(0, n_ctx)
        self.context_bar.setValue(min(n_past, n_ctx))
        level = "full" if frac >= 0.98 else "warn" if frac >= WARN_FRACTION else "ok"
        if self.context_bar.property("level") != level:
            self.context_bar.setProperty("level", level)
            self.context_bar.style().unpolish(self.context_bar)
            self.context_bar.style().polish(self.context_bar)
        text = f"Context {n_past:,} / {self.n_ctx:,}"
        if level == "warn":
            text += " · nearly full"
        elif level == "full":
            text += " · full"
        self.context_label.setText(text)
        self.context_bar.setToolTip(f"{frac:.0%} of the context is used")
        self._values["context"].setText(f"{n_past:,} of {self.n_ctx:,} tokens ({frac:.0%})")

    def show_prefill(self, n_done: int) -> None:
        """The prefill's progress in the context strip (the tokens already in the context)."""
        if self.n_ctx > 0:
            self.show_context(n_done, self.n_ctx)

    @property
    def context_level(self) -> str:
        return str(self.context_bar.property("level") or "ok")

    def update_stats(self, s: ev.StatsEvent) -> None:
        self.last_stats = s
        self.speed_label.setText(f"{s.decode_tok_s:.1f} tok/s · TTFT {s.ttft_s:.2f} s")
        self._values["tok_s"].setText(f"{s.decode_tok_s:.1f} tokens/s ({s.decode_tokens} tokens)")
        self._values["ttft"].setText(f"{s.ttft_s:.2f} s")
        self._values["prefill"].setText(f"{s.prefill_tok_s:,.0f} tokens/s" if s.prefill_tok_s > 0 else "–")

    def set_live_speed(self, tok_s: float) -> None:
        self.speed_label.setText(f"{tok_s:.1f} tok/s")

    def set_prefill_speed(self, tok_s: float) -> None:
        self._values["prefill"].setText(f"{tok_s:,.0f} tokens/s" if tok_s > 0 else "–")
