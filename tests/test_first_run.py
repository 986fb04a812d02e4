"""First-run failures a new user meets, each refused up front with one sentence: a context that cannot fit in memory
(before llama.cpp spends half a minute allocating it) and a Linux desktop without Qt's xcb libraries (before
QApplication aborts the process)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from app import qt_platform
from engine.models import largest_fitting_ctx, read_model_info

ROOT = Path(__file__).resolve().parent.parent


def test_an_impossible_context_is_refused_from_the_estimate_naming_what_fits(default_model_path, tmp_path):
    t0 = time.perf_counter()
    r = subprocess.run(
        [
            str(Path(sys.executable).parent / "skv"),
            "ask",
            "--doc",
            str(ROOT / "README.md"),
            "--n-ctx",
            "99999999",
            "--no-session-cache",
            "Hello?",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    elapsed = time.perf_counter() - t0
    assert r.returncode == 2, r
    assert "Traceback" not in r.stderr and r.stdout == ""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "a context of 99999999 tokens needs up to" in lines[0] and "GiB" in lines[0]
    assert "choose --n-ctx" in lines[0] and "or less" in lines[0]
    fit = int(lines[0].split("choose --n-ctx ")[1].split()[0])
    assert fit % 256 == 0 and 256 <= fit < 99999999
    assert elapsed < 30, f"took {elapsed:.1f} s: it should not allocate anything"


def test_largest_fitting_context_fits_and_one_more_pad_does_not(default_model_path):
    from engine.models import estimate_memory

    info = read_model_info(default_model_path)
    avail = 3 * 2**30
    fit = largest_fitting_ctx(info, avail)
    assert (
        estimate_memory(info, fit).total_bytes_max <= avail < estimate_memory(info, fit + 256).total_bytes_max
    )
    assert largest_fitting_ctx(info, info.size_bytes // 2) == 0


def test_the_session_refuses_before_loading(tiny_model_path, monkeypatch):
    from engine import models
    from engine.session import SessionInputError, check_model

    monkeypatch.setattr(models, "available_memory_bytes", lambda: 256 * 2**20)
    with pytest.raises(SessionInputError, match=r"needs up to .* GiB .* is free: choose --n-ctx \d+ or less"):
        check_model(tiny_model_path, 1 << 20)
    assert check_model(tiny_model_path, 2048)[1] == []


FAKE_LDD = """\tlinux-vdso.so.1 (0x00007ffd)
\tlibxcb-icccm.so.4 => not found
\tlibxcb.so.1 => /lib/x86_64-linux-gnu/libxcb.so.1 (0x00007f)
\tlibxkbcommon-x11.so.0 => not found
"""


def test_missing_xcb_libraries_are_named_with_the_packages_to_install(tmp_path):
    plugin = tmp_path / "libqxcb.so"
    plugin.write_bytes(b"")
    missing = qt_platform.missing_libraries(plugin, ldd=lambda p: FAKE_LDD, find_library=lambda name: None)
    assert missing == ["libxcb-icccm.so.4", "libxkbcommon-x11.so.0", "libxcb-cursor.so.0"]
    assert qt_platform.missing_libraries(plugin, ldd=lambda p: "", find_library=lambda n: f"lib{n}.so") == []


def test_each_missing_library_is_named_once(tmp_path):
    """ldd prints a missing library once per library that needs it: the message named some of them twice."""
    plugin = tmp_path / "libqxcb.so"
    plugin.write_bytes(b"")
    twice = FAKE_LDD + "\tlibxcb-icccm.so.4 => not found\n\tlibxcb-cursor.so.0 => not found\n"
    missing = qt_platform.missing_libraries(plugin, ldd=lambda p: twice, find_library=lambda name: None)
    assert missing == ["libxcb-icccm.so.4", "libxkbcommon-x11.so.0", "libxcb-cursor.so.0"]


def test_platform_problem_says_what_to_install_and_the_app_exits_2(monkeypatch, capsys, tmp_path):
    plugin = tmp_path / "libqxcb.so"
    plugin.write_bytes(b"")
    monkeypatch.setattr(qt_platform, "xcb_plugin", lambda: plugin)
    monkeypatch.setattr(qt_platform, "_ldd", lambda p: FAKE_LDD)
    monkeypatch.setattr(qt_platform.ctypes.util, "find_library", lambda name: None)
    env = {"DISPLAY": ":0"}
    msg = qt_platform.platform_problem(env)
    assert msg is not None
    assert "sudo apt-get install libxcb-cursor0 libxcb-icccm4 libxkbcommon-x11-0" in msg
    # other platforms are Qt's business; no display is its own sentence
    assert qt_platform.platform_problem({"QT_QPA_PLATFORM": "offscreen", "DISPLAY": ":0"}) is None
    assert qt_platform.platform_problem({"WAYLAND_DISPLAY": "wayland-0"}) is None
    assert "DISPLAY is not set" in qt_platform.platform_problem({})

    from app import main as app_main

    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert app_main.main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("skv-desktop: error: Qt cannot open a window") and err.count("\n") == 1


def test_the_real_plugin_check_runs_on_this_machine():
    """ldd on the installed libqxcb.so: whatever is missing here is reported as a list of sonames (no crash)."""
    plugin = qt_platform.xcb_plugin()
    if plugin is None:
        pytest.skip("PySide6 ships no xcb plugin here")
    missing = qt_platform.missing_libraries(plugin)
    assert all(".so" in m for m in missing)
