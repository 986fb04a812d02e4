#!/usr/bin/env python3
"""Build the patched llama-cpp-python wheel: pinned sdist -> patches + new files -> cached wheel.

Standalone (stdlib only, any python3 >= 3.8); it does not import the project.

    python native/build.py                 # CPU wheel; prints its path
    python native/build.py --cuda          # adds the CUDA backend (sm_90 unless --cuda-arch)
    python native/build.py --source DIR    # an already unpacked llama-cpp-python sdist tree (no index access)
    python native/build.py --print-key     # the cache key of this build; builds nothing

The wheel is cached under <cache>/wheels/<key>/, where key = hash(sdist sha256, native/ files, flags), so a second
run with nothing changed only prints the cached path. Each flags-hash keeps a persistent source tree
(<cache>/src/<flags-hash>/tree, files only rewritten when their content changes) and a persistent scikit-build
build dir (<cache>/build/<flags-hash>), so editing one native file rebuilds incrementally with ninja.

Exit codes: 0 success; 2 bad input (a patch that does not apply, a bad --source, a hash mismatch); 1 other failure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

PACKAGE = "llama-cpp-python"
VERSION = "0.3.36"
SDIST_NAME = f"llama_cpp_python-{VERSION}.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
VENDOR = "vendor/llama.cpp"
INIT_PY = "llama_cpp/__init__.py"
# Bump when the tree preparation or the build command changes in a way the key would not see.
RECIPE_VERSION = "1"

NATIVE_DIR = Path(__file__).resolve().parent
SKIP_NAMES = {"__pycache__", ".DS_Store"}


class BuildError(Exception):
    """A failure with a one-line message; code 2 = bad input, 1 = other."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def cache_dir() -> Path:
    # Same rule as engine/paths.py:cache_dir() (duplicated on purpose: this script stays standalone).
    if os.environ.get("SKV_CACHE_DIR"):
        return Path(os.environ["SKV_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "sentencekv"


def log(msg: str) -> None:
    print(f"[build] {msg}", file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def iter_files(root: Path):
    """Yield files under root in a stable order, skipping VCS and cache entries."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_NAMES and d != ".git")
        for name in sorted(filenames):
            if name in SKIP_NAMES or name == ".git" or name.endswith(".pyc"):
                continue
            yield Path(dirpath) / name


# ---------------------------------------------------------------------------------------------------------------
# Inputs: the native tree, the flags, the sdist


def native_files() -> dict[str, bytes]:
    """Relative path -> content of every file of native/ that shapes the wheel (patches, src, include, build.py)."""
    files = {}
    for sub in ("patches", "src", "include"):
        d = NATIVE_DIR / sub
        if d.is_dir():
            for p in iter_files(d):
                files[p.relative_to(NATIVE_DIR).as_posix()] = p.read_bytes()
    files["build.py"] = Path(__file__).resolve().read_bytes()
    return files


def build_flags(args: argparse.Namespace) -> dict:
    # GGML_RPC: llama.cpp's RPC backend (a model split across hosts: `skv rpc-server`, `--rpc`); its devices
    # appear only when a server is added, so a run without --rpc is unchanged
    cmake = ["-DLLAVA_BUILD=OFF", "-DGGML_RPC=ON"]
    if not args.native:
        cmake.append("-DGGML_NATIVE=OFF")
    if args.cuda:
        cmake += ["-DGGML_CUDA=ON", f"-DCMAKE_CUDA_ARCHITECTURES={args.cuda_arch}"]
    extra = os.environ.get("CMAKE_ARGS", "").strip()
    if extra:
        cmake += extra.split()
    return {"cuda": bool(args.cuda), "native": bool(args.native), "cmake_args": cmake}


def short_hash(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def flags_hash(source_id: str, flags: dict) -> str:
    return short_hash(RECIPE_VERSION, source_id, json.dumps(flags, sort_keys=True))[:16]


def cache_key(source_id: str, flags: dict, natives: dict[str, bytes]) -> str:
    parts = [RECIPE_VERSION, source_id, json.dumps(flags, sort_keys=True)]
    for rel in sorted(natives):
        parts += [rel, natives[rel]]
    return short_hash(*parts)


def tree_id(root: Path) -> str:
    """Content hash of an unpacked source tree (for --source, which has no sdist sha)."""
    h = hashlib.sha256()
    for p in iter_files(root):
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        h.update(sha256_file(p).encode())
    return "tree:" + h.hexdigest()


def fetch_sdist(cache: Path) -> Path:
    """The pinned sdist in the cache, downloaded with pip on first use; sha256 verified every time."""
    sdist_dir = cache / "sdist"
    target = sdist_dir / SDIST_NAME
    if target.is_file():
        if sha256_file(target) == SDIST_SHA256:
            return target
        log(f"cached sdist {target} has the wrong sha256; downloading it again")
        target.unlink()
    sdist_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=sdist_dir) as tmp:
        log(f"downloading {PACKAGE}=={VERSION} sdist")
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            # Only this package as an sdist: `:all:` would also build its build backend's own
            # dependencies from source while pip prepares the sdist's metadata (slow).
            "--no-binary",
            PACKAGE,
            "--disable-pip-version-check",
            "-d",
            tmp,
            f"{PACKAGE}=={VERSION}",
        ]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            tail = proc.stdout.strip().splitlines()[-1:] or ["(no output)"]
            raise BuildError(f"pip download of {PACKAGE}=={VERSION} failed: {tail[0]}")
        got = Path(tmp) / SDIST_NAME
        if not got.is_file():
            raise BuildError(f"pip download did not produce {SDIST_NAME} (got {os.listdir(tmp)})")
        digest = sha256_file(got)
        if digest != SDIST_SHA256:
            raise BuildError(f"sha256 mismatch for {SDIST_NAME}: got {digest}, expected {SDIST_SHA256}", 2)
        os.replace(got, target)
    return target


def unpack_sdist(sdist: Path, cache: Path) -> Path:
    """The pristine unpacked sdist (<cache>/sdist/llama_cpp_python-<v>), unpacked once."""
    root = cache / "sdist" / f"llama_cpp_python-{VERSION}"
    marker = cache / "sdist" / f".unpacked-{SDIST_SHA256[:16]}"
    if marker.is_file() and root.is_dir():
        return root
    log(f"unpacking {sdist.name}")
    if root.exists():
        shutil.rmtree(root)
    with tempfile.TemporaryDirectory(dir=cache / "sdist") as tmp:
        with tarfile.open(sdist) as tar:
            if sys.version_info >= (3, 12):
                tar.extractall(tmp, filter="data")
            else:
                tar.extractall(tmp)  # noqa: S202 - the archive's sha256 is pinned
        os.replace(Path(tmp) / f"llama_cpp_python-{VERSION}", root)
    marker.write_text(SDIST_SHA256 + "\n")
    return root


def check_source(root: Path) -> None:
    for rel in (INIT_PY, "pyproject.toml", f"{VENDOR}/CMakeLists.txt", f"{VENDOR}/src/CMakeLists.txt"):
        if not (root / rel).is_file():
            raise BuildError(f"--source {root}: not an unpacked llama-cpp-python sdist (missing {rel})", 2)


# ---------------------------------------------------------------------------------------------------------------
# The persistent build tree


def populate_tree(pristine: Path, tree: Path) -> None:
    """Copy the pristine sdist into tree once (mtimes kept); the stray submodule .git files are left out."""
    marker = tree.parent / ".populated"
    if marker.is_file() and tree.is_dir():
        return
    log(f"copying the source tree to {tree}")
    if tree.exists():
        shutil.rmtree(tree)
    for p in iter_files(pristine):
        dst = tree / p.relative_to(pristine)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dst)
    marker.write_text("ok\n")


def patch_targets(patch: Path) -> list[tuple[str | None, str | None]]:
    """(old, new) paths of each file in a git-style patch; None for /dev/null."""
    out = []
    old = None
    for line in patch.read_text(errors="replace").splitlines():
        if line.startswith("--- "):
            old = line[4:].split("\t")[0].strip()
        elif line.startswith("+++ ") and old is not None:
            new = line[4:].split("\t")[0].strip()
            out.append((None if old == "/dev/null" else old[2:], None if new == "/dev/null" else new[2:]))
            old = None
    return out


def apply_patches(pristine: Path, patches: list[Path]) -> dict[str, bytes | None]:
    """Apply patches in order to scratch copies of the files they touch; returns vendor-relative path -> content
    (None = the patch deletes the file). Raises BuildError(code 2) naming the first patch that does not apply."""
    result: dict[str, bytes | None] = {}
    if not patches:
        return result
    with tempfile.TemporaryDirectory(prefix="skv-patch-") as tmp:
        scratch = Path(tmp) / "llama.cpp"
        scratch.mkdir()
        touched: set[str] = set()
        for patch in patches:
            for old, new in patch_targets(patch):
                for rel in (old, new):
                    if rel and rel not in touched:
                        touched.add(rel)
                        src = pristine / VENDOR / rel
                        if src.is_file():
                            (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
                            shutil.copy2(src, scratch / rel)
        # Keep git from finding an enclosing repository: git apply would then use repo-relative paths.
        env = dict(os.environ, GIT_CEILING_DIRECTORIES=str(Path(tmp)))
        for patch in patches:
            for step in (["--check"], []):
                proc = subprocess.run(
                    ["git", "apply", *step, str(patch)],
                    cwd=scratch,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                if proc.returncode != 0:
                    why = (proc.stdout.strip().splitlines() or ["git apply failed"])[0]
                    raise BuildError(f"patch does not apply: {patch} ({why})", 2)
        for rel in sorted(touched):
            p = scratch / rel
            result[rel] = p.read_bytes() if p.is_file() else None
    return result


def desired_files(pristine: Path, natives: dict[str, bytes], version: str) -> dict[str, bytes | None]:
    """Tree-relative path -> content for every file that differs from the pristine sdist."""
    patches = sorted((NATIVE_DIR / "patches").glob("*.patch")) if (NATIVE_DIR / "patches").is_dir() else []
    want = {f"{VENDOR}/{rel}": data for rel, data in apply_patches(pristine, patches).items()}
    for rel, data in natives.items():
        for sub in ("src", "include"):
            if rel.startswith(sub + "/"):
                want[f"{VENDOR}/{rel}"] = data
    init = (pristine / INIT_PY).read_text()
    old_line = f'__version__ = "{VERSION}"'
    if old_line not in init:
        raise BuildError(f"{INIT_PY} has no line {old_line!r}; is this the {VERSION} sdist?", 2)
    want[INIT_PY] = init.replace(old_line, f'__version__ = "{version}"').encode()
    return want


def write_if_changed(path: Path, data: bytes) -> bool:
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".skv-tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return True


def sync_tree(pristine: Path, tree: Path, want: dict[str, bytes | None]) -> int:
    """Bring tree to pristine + want, touching only files whose content changes. Returns the number changed."""
    state_path = tree.parent / "overlay.json"
    before = set(json.loads(state_path.read_text())) if state_path.is_file() else set()
    changed = 0
    for rel in sorted(before - set(want)):  # overlaid last time, not any more: back to pristine
        src, dst = pristine / rel, tree / rel
        if src.is_file():
            if write_if_changed(dst, src.read_bytes()):
                changed += 1
        elif dst.exists():
            dst.unlink()
            changed += 1
    for rel, data in sorted(want.items()):
        dst = tree / rel
        if data is None:
            if dst.exists():
                dst.unlink()
                changed += 1
        elif write_if_changed(dst, data):
            changed += 1
    state_path.write_text(json.dumps(sorted(want), indent=1) + "\n")
    return changed


# ---------------------------------------------------------------------------------------------------------------
# The build


def build_wheel(python: str, tree: Path, build_dir: Path, flags: dict, out_dir: Path, verbose: bool) -> Path:
    probe = subprocess.run([python, "-c", "import scikit_build_core"], capture_output=True)
    if probe.returncode != 0:
        raise BuildError(
            f"scikit-build-core is not installed for {python}; run: {python} -m pip install scikit-build-core"
        )
    env = dict(os.environ)
    env["CMAKE_ARGS"] = " ".join(flags["cmake_args"])
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    cmd = [
        python,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--disable-pip-version-check",
        "-C",
        f"build-dir={build_dir}",
        "-w",
        str(out_dir),
        str(tree),
    ]
    log_path = build_dir.parent / f"{build_dir.name}.log"
    log(f"building the wheel (CMAKE_ARGS={env['CMAKE_ARGS']}); log: {log_path}")
    start = time.monotonic()
    with open(log_path, "w") as lf:
        proc = subprocess.run(cmd, env=env, stdout=None if verbose else lf, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        if not verbose:
            tail = log_path.read_text(errors="replace").splitlines()[-40:]
            print("\n".join(tail), file=sys.stderr)
        raise BuildError(f"wheel build failed (exit {proc.returncode}); full log: {log_path}")
    wheels = sorted(out_dir.glob("*.whl"))
    if len(wheels) != 1:
        raise BuildError(f"expected one wheel in {out_dir}, found {[w.name for w in wheels]}")
    log(f"built {wheels[0].name} in {time.monotonic() - start:.0f} s")
    return wheels[0]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--source", type=Path, help="an unpacked llama-cpp-python sdist tree (skips the download)"
    )
    ap.add_argument("--cuda", action="store_true", help="build the CUDA backend")
    ap.add_argument("--cuda-arch", default="90", help="CMAKE_CUDA_ARCHITECTURES with --cuda (default 90)")
    ap.add_argument(
        "--native", action="store_true", help="optimise for this CPU (GGML_NATIVE=ON; not portable)"
    )
    ap.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter that runs pip wheel (needs scikit-build-core; default: this one)",
    )
    ap.add_argument("--print-key", action="store_true", help="print the cache key and whether it is cached")
    ap.add_argument("--force", action="store_true", help="rebuild even if the wheel is cached")
    ap.add_argument("-v", "--verbose", action="store_true", help="stream the build output")
    return ap.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    if args.source:
        pristine = args.source.resolve()
        check_source(pristine)
        source_id = tree_id(pristine)
    else:
        source_id = "sdist:" + SDIST_SHA256
        pristine = None
    flags = build_flags(args)
    natives = native_files()
    key = cache_key(source_id, flags, natives)
    fhash = flags_hash(source_id, flags)
    wheel_dir = cache / "wheels" / key[:24]
    cached = sorted(wheel_dir.glob("*.whl")) if wheel_dir.is_dir() else []
    if args.print_key:
        print(
            json.dumps(
                {
                    "key": key,
                    "version": f"{VERSION}+skv.{key[:12]}",
                    "flags_hash": fhash,
                    "cached": str(cached[0]) if cached else None,
                    "flags": flags,
                }
            )
        )
        return 0
    if cached and not args.force:
        log(f"cached wheel (key {key[:12]})")
        print(cached[0])
        return 0

    if pristine is None:
        pristine = unpack_sdist(fetch_sdist(cache), cache)
    want = desired_files(pristine, natives, f"{VERSION}+skv.{key[:12]}")  # a bad patch fails here, early
    tree = cache / "src" / fhash / "tree"
    populate_tree(pristine, tree)
    n_changed = sync_tree(pristine, tree, want)
    log(f"source tree {tree}: {n_changed} file(s) rewritten")
    build_dir = cache / "build" / fhash
    build_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        wheel = build_wheel(args.python, tree, build_dir, flags, Path(tmp), args.verbose)
        wheel_dir.mkdir(parents=True, exist_ok=True)
        for old in wheel_dir.glob("*.whl"):
            old.unlink()
        final = wheel_dir / wheel.name
        shutil.move(str(wheel), final)
    print(final)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except BuildError as e:
        print(f"build.py: error: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("build.py: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
