"""Light and dark themes: a Fusion palette plus resources/style.qss filled from the same colours."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

RESOURCES = Path(__file__).resolve().parent.parent / "resources"

LIGHT = {
    "window": "#f6f7f9",
    "panel": "#eef0f4",
    "base": "#ffffff",
    "text": "#1d2330",
    "muted": "#5d6678",
    "border": "#d5d9e2",
    "button": "#ffffff",
    "hover": "#e3e7ef",
    "selection": "#cfdcfb",
    "accent": "#2f5bd3",
    "on_accent": "#ffffff",
    "warn": "#c98a00",
    "error": "#c0392b",
    "info_bg": "#e8effd",
    "info_border": "#b8cbf5",
    "warn_bg": "#fff5db",
    "warn_border": "#ecd28a",
    "error_bg": "#fde9e7",
    "error_border": "#f0b5ae",
    "heat": "#ffb000",
    "focus": "#2f5bd3",
    "user_bubble": "#e8effd",
    "bot_bubble": "#ffffff",
    "outside": "#98a0b0",
    "scroll": "#c3c8d3",
}
DARK = {
    "window": "#1b1e24",
    "panel": "#22262e",
    "base": "#15181d",
    "text": "#e4e7ee",
    "muted": "#98a1b3",
    "border": "#363c48",
    "button": "#2b303a",
    "hover": "#333946",
    "selection": "#2e4679",
    "accent": "#6d95ff",
    "on_accent": "#0e1320",
    "warn": "#e0a82e",
    "error": "#ff7b6b",
    "info_bg": "#1f2d4a",
    "info_border": "#34497a",
    "warn_bg": "#3a3017",
    "warn_border": "#6b5520",
    "error_bg": "#432320",
    "error_border": "#7a3a33",
    "heat": "#d98e00",
    "focus": "#8fb0ff",
    "user_bubble": "#243352",
    "bot_bubble": "#1f232b",
    "outside": "#5f6778",
    "scroll": "#444b59",
}


def system_is_dark() -> bool:
    hints = QGuiApplication.styleHints()
    scheme = getattr(hints, "colorScheme", None)
    if scheme is not None:
        s = scheme()
        if s == Qt.ColorScheme.Dark:
            return True
        if s == Qt.ColorScheme.Light:
            return False
    return QGuiApplication.palette().color(QPalette.ColorRole.Window).lightness() < 128


def colors_for(theme: str) -> dict[str, str]:
    """theme: "light", "dark" or "system"."""
    if theme == "dark" or (theme == "system" and system_is_dark()):
        return DARK
    return LIGHT


def apply_theme(app: QApplication, theme: str) -> dict[str, str]:
    """Set the palette and the style sheet for theme; returns the colours used (widgets that paint read them)."""
    c = colors_for(theme)
    app.setStyle("Fusion")
    pal = QPalette()
    roles = {
        QPalette.ColorRole.Window: c["window"],
        QPalette.ColorRole.WindowText: c["text"],
        QPalette.ColorRole.Base: c["base"],
        QPalette.ColorRole.AlternateBase: c["panel"],
        QPalette.ColorRole.Text: c["text"],
        QPalette.ColorRole.Button: c["button"],
        QPalette.ColorRole.ButtonText: c["text"],
        QPalette.ColorRole.Highlight: c["selection"],
        QPalette.ColorRole.HighlightedText: c["text"],
        QPalette.ColorRole.ToolTipBase: c["panel"],
        QPalette.ColorRole.ToolTipText: c["text"],
        QPalette.ColorRole.PlaceholderText: c["muted"],
        QPalette.ColorRole.Link: c["accent"],
    }
    for role, color in roles.items():
        pal.setColor(role, QColor(color))
    pal.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text, QColor(c["muted"]))
    pal.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.ButtonText, QColor(c["muted"]))
    app.setPalette(pal)
    qss = (RESOURCES / "style.qss").read_text(encoding="utf-8")
    for key, value in c.items():
        qss = qss.replace(f"@{key}@", value)
    app.setStyleSheet(qss)
    return c
