"""Writers shared by the benchmarks: plain-text tables, JSON, Markdown, and PNG plots (only when matplotlib is
importable: it is an optional dependency, in the `dev` extra)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BOOKS_DIR = Path(__file__).resolve().parents[2] / "resources" / "books"


def books_dir() -> Path:
    """The public-domain books in resources/books (SKV_BOOKS_DIR overrides)."""
    env = os.environ.get("SKV_BOOKS_DIR")
    return Path(env).expanduser() if env else BOOKS_DIR


def fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(str(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: cores, CPU model, load, date, library versions."""
    info: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "nproc": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        info["cpu_model"] = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")
            ),
            "unknown",
        )
    except OSError:
        info["cpu_model"] = "unknown"
    info["uptime_start"] = uptime()
    try:
        from engine.versions import native_versions

        v = native_versions()
        info["llama_cpp_python"] = v.get("llama_cpp_python")
        info["llama_cpp"] = v.get("llama_cpp")
        info["native_patch"] = v.get("native_patch")
    except Exception:  # noqa: BLE001 - optional detail
        pass
    return info


def uptime() -> str:
    """`uptime` output (the load average tells how busy the shared machine was)."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        la = os.getloadavg()
        return f"load average: {la[0]:.2f}, {la[1]:.2f}, {la[2]:.2f}"


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    return path


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def line_plot(
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    xs: Sequence[float],
    series: dict[str, Sequence[float | None]],
    logx: bool = True,
) -> Path | None:
    """One line per series (None values skipped); returns None without matplotlib."""
    if not have_matplotlib():
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for name, ys in series.items():
        pts = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    if logx:
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(xs), [f"{int(x) // 1024}k" if x >= 1024 else str(int(x)) for x in xs])
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def heatmap(
    path: Path,
    title: str,
    grids: dict[str, list[list[float | None]]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    xlabel: str,
    ylabel: str,
) -> Path | None:
    """One panel per grid (values 0..1, None shown blank); returns None without matplotlib."""
    if not have_matplotlib():
        return None
    import numpy as np

    plt = _pyplot()
    n = len(grids)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n + 1, 0.5 * len(row_labels) + 2.2), dpi=110, squeeze=False)
    im = None
    for ax, (name, grid) in zip(axes[0], grids.items(), strict=True):
        arr = np.array([[np.nan if v is None else v for v in row] for row in grid], dtype=float)
        im = ax.imshow(arr, vmin=0.0, vmax=1.0, cmap="RdYlGn", aspect="auto")
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(len(col_labels)), col_labels, fontsize=8)
        ax.set_yticks(range(len(row_labels)), row_labels, fontsize=8)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        for i in range(arr.shape[0]):
            for j in range(arr.shape[1]):
                if not np.isnan(arr[i, j]):
                    ax.text(j, i, f"{arr[i, j]:.2g}", ha="center", va="center", fontsize=8)
    fig.suptitle(title, fontsize=10)
    if im is not None:
        fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def target_line(t: dict) -> str:
    """One checked target: 'what: value (ceiling c) -> met|MISSED'."""
    extra = f" (ceiling {t['ceiling']:.2f})" if t.get("ceiling") else ""
    return f"{t['target']}: {t['value']:.3f}{extra} -> {'met' if t['met'] else 'MISSED'}"
