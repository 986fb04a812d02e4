#!/usr/bin/env python3
"""Build the Linux bundle: `make package` (run with the venv's Python after `make setup`).

    .venv/bin/python packaging/bundle.py [--out dist]

One folder (PyInstaller, onedir) holding Python, PySide6, the patched libllama of the installed wheel (checked: its
`llama_skv_` symbols), the readers, the server, the icon, the .desktop file, AppStream metadata, the licences and
the assembled built-in model, archived as dist/sentencekv-desktop-<version>-linux-x86_64.tar.gz with install.sh.
`skv` (CLI, server) is the same executable run under that name (a symlink in the folder).

Exit codes: 0 built; 2 the environment cannot build it (not the patched wheel, PyInstaller missing); 1 a step failed.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = "sentencekv-desktop"
PYINSTALLER = "pyinstaller==6.22.3"


class BundleError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def log(msg: str) -> None:
    print(f"[package] {msg}", file=sys.stderr, flush=True)


def version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def llama_lib_dir() -> Path:
    import llama_cpp

    return Path(llama_cpp.__file__).parent / "lib"


def check_patched(lib: Path) -> None:
    """The libllama at `lib` is ours: it exports the SentenceKV C API (a stock build does not)."""
    try:
        dll = ctypes.CDLL(str(lib))
    except OSError as e:
        raise BundleError(f"cannot load {lib}: {e}", 2) from None
    for sym in ("llama_skv_request", "llama_skv_get_stats", "llama_skv_version"):
        if not hasattr(dll, sym):
            raise BundleError(f"{lib} has no {sym}: it is not the patched build; run make setup", 2)


def build(out: Path) -> Path:
    t0 = time.monotonic()
    lib_dir = llama_lib_dir()
    check_patched(lib_dir / "libllama.so")
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        log(f"installing {PYINSTALLER} into the venv")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", PYINSTALLER], check=True)
    work = ROOT / "build" / "package"
    dist = work / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    env = {**os.environ, "SKV_REPO": str(ROOT), "SKV_LLAMA_LIB": str(lib_dir)}
    log("PyInstaller (one folder)")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "PyInstaller",
            "--noconfirm",
            "--log-level",
            "WARN",
            "--distpath",
            str(dist),
            "--workpath",
            str(work / "work"),
            str(ROOT / "packaging" / "sentencekv.spec"),
        ],
        check=True,
        env=env,
        cwd=ROOT,
    )
    folder = dist / NAME
    check_patched(folder / "_internal" / "llama_cpp" / "lib" / "libllama.so")
    (folder / "skv").symlink_to("skv-desktop")
    from engine.models import BUILTIN_MODELS, DEFAULT_MODEL, builtin_model_path

    model = builtin_model_path(DEFAULT_MODEL)
    (folder / "models").mkdir()
    log(f"the built-in model ({model.stat().st_size / 2**20:.0f} MiB)")
    shutil.copy2(model, folder / "models" / BUILTIN_MODELS[DEFAULT_MODEL].file_name)
    share = folder / "share"
    share.mkdir()
    shutil.copy2(ROOT / "resources" / "sentencekv-desktop.desktop", share)
    shutil.copy2(ROOT / "resources" / "icons" / "sentencekv.svg", share)
    shutil.copy2(ROOT / "packaging" / "io.github.sentencekv.Desktop.metainfo.xml", share)
    shutil.copy2(ROOT / "packaging" / "install.sh", folder)
    shutil.copy2(ROOT / "packaging" / "LICENSES.md", folder)
    (folder / "VERSION").write_text(version() + "\n")
    out.mkdir(parents=True, exist_ok=True)
    archive = out / f"{NAME}-{version()}-linux-x86_64.tar.gz"
    log(f"archive {archive.name}")
    with tarfile.open(archive, "w:gz", compresslevel=6) as tar:
        tar.add(folder, arcname=f"{NAME}-{version()}")
    took = time.monotonic() - t0
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    log(
        f"built in {took:.0f} s: folder {size / 2**20:.0f} MiB, archive {archive.stat().st_size / 2**20:.0f} MiB"
    )
    return archive


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "dist"), help="where the archive goes (default dist/)")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    try:
        print(build(Path(args.out)))
    except BundleError as e:
        print(f"package: error: {e}", file=sys.stderr)
        return e.code
    except subprocess.CalledProcessError as e:
        print(
            f"package: error: {' '.join(map(str, e.cmd[:4]))} failed with exit {e.returncode}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
