"""User folders. SKV_CACHE_DIR / SKV_DATA_DIR override; otherwise the XDG base directories."""

from __future__ import annotations

import os
from pathlib import Path

APP_DIR_NAME = "sentencekv"


def cache_dir() -> Path:
    """Re-creatable files: built wheels, assembled models, prefilled document sessions.

    The same rule is duplicated in native/build.py (which must stay standalone).
    """
    if os.environ.get("SKV_CACHE_DIR"):
        return Path(os.environ["SKV_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / APP_DIR_NAME


def data_dir() -> Path:
    """User data that is not re-creatable: settings-adjacent files, saved conversations."""
    if os.environ.get("SKV_DATA_DIR"):
        return Path(os.environ["SKV_DATA_DIR"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / APP_DIR_NAME
