"""Before Qt starts: will its platform plugin load? On a Linux desktop without Qt's xcb libraries, QApplication
aborts the process with Qt's own "could not load the Qt platform plugin" (no exception to catch), so the app checks
first and says which system packages to install.

Only the xcb plugin is checked (what Qt picks on an X11 session, and under XWayland when no Wayland plugin works);
`offscreen`, `minimal`, `wayland` and others are left to Qt.
"""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys
from pathlib import Path

# shared library (as ldd names it) -> Debian/Ubuntu package
XCB_PACKAGES: dict[str, str] = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-xinerama.so.0": "libxcb-xinerama0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-xinput.so.0": "libxcb-xinput0",
    "libxcb-glx.so.0": "libxcb-glx0",
    "libxcb.so.1": "libxcb1",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libX11.so.6": "libx11-6",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libfontconfig.so.1": "libfontconfig1",
    "libdbus-1.so.3": "libdbus-1-3",
}
# loaded by the plugin at run time (dlopen), so ldd does not list it: Qt >= 6.5 needs it for xcb
DLOPENED = ("libxcb-cursor.so.0",)


def uses_xcb(env: dict[str, str] | None = None) -> bool:
    """True when Qt will try the xcb plugin: Linux, QT_QPA_PLATFORM unset or xcb, not a Wayland session."""
    env = dict(os.environ if env is None else env)
    if not sys.platform.startswith("linux"):
        return False
    platform = env.get("QT_QPA_PLATFORM", "").split(":")[0].strip().lower()
    if platform:
        return platform == "xcb"
    return not env.get("WAYLAND_DISPLAY")


def xcb_plugin() -> Path | None:
    try:
        import PySide6
    except ImportError:
        return None
    path = Path(PySide6.__file__).parent / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    return path if path.is_file() else None


def missing_libraries(plugin: Path, ldd=None, find_library=None) -> list[str]:
    """Shared libraries the xcb plugin needs that the system cannot load (from `ldd`, plus the dlopened ones)."""
    run = ldd or _ldd
    find = find_library or ctypes.util.find_library
    missing = []
    for line in run(plugin).splitlines():
        name, sep, where = line.strip().partition("=>")
        if sep and "not found" in where and name.strip() not in missing:
            missing.append(name.strip())  # ldd prints a missing library once per library that needs it
    for lib in DLOPENED:
        stem = lib.removeprefix("lib").split(".so")[0]
        if lib not in missing and find(stem) is None:
            missing.append(lib)
    return missing


def _ldd(path: Path) -> str:
    try:
        return subprocess.run(["ldd", str(path)], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""  # no ldd: let Qt try


def platform_problem(env: dict[str, str] | None = None, ldd=None, find_library=None) -> str | None:
    """One message saying why Qt cannot open a window here and what to install, or None when it should work."""
    env = dict(os.environ if env is None else env)
    if not uses_xcb(env):
        return None
    plugin = xcb_plugin()
    if plugin is None:
        return None
    if not env.get("DISPLAY"):
        return (
            "no display to open the window on (DISPLAY is not set): run it in a desktop session, or set "
            "QT_QPA_PLATFORM=offscreen for a window nobody sees"
        )
    missing = missing_libraries(plugin, ldd, find_library)
    if not missing:
        return None
    packages = sorted({XCB_PACKAGES.get(m, m) for m in missing})
    return (
        f"Qt cannot open a window: the system libraries {', '.join(missing)} are missing; install them with "
        f"`sudo apt-get install {' '.join(packages)}` (Debian/Ubuntu; see the README for other systems)"
    )
