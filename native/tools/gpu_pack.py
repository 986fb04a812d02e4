#!/usr/bin/env python3
"""Pack what `native/tools/gpu_check.sh` needs on a GPU machine that has no package index into `.gpu/` (ignored by
git; name it in the device tool's `carry`). Issue 16 item 4.

    .venv/bin/python native/tools/gpu_pack.py [--out .gpu]

Writes
- `.gpu/llama.cpp.tar.gz`: the *patched* vendor/llama.cpp of the pinned sdist (native/build.py's patches and new
  files applied in memory, the same bytes the wheel is built from), trimmed to what `cmake --target llama` with the
  CPU and CUDA backends reads: no models, docs, tools, tests, examples, or other backends;
- `.gpu/site/`: the pure-Python packages the engine needs that such a machine lacks: `llama_cpp` (the bindings from
  the same sdist; they load the library named by LLAMA_CPP_LIB_PATH), `gguf` (writes the synthetic models there),
  `pysbd` (sentence splitting) and `diskcache` (imported by llama_cpp);
- `.gpu/books/`: the books the checks read (a copy of resources/books, so the pack stands alone);
- `.gpu/MANIFEST.json`: sizes, the build key, and the working tree's size, so the 64 MiB carry limit is checked here.

Needs `make setup` first (the sdist cached; nothing is downloaded). Exit codes: 0 ok, 2 missing input or over size.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 64 * 2**20  # the device tool's working-tree limit, carried paths included
VENDOR = "vendor/llama.cpp"
# what the llama target's CMake reads, relative to vendor/llama.cpp
KEEP_TOP = ("CMakeLists.txt", "LICENSE", "cmake", "include", "src", "ggml", "vendor")
DROP = (
    "vendor/cpp-httplib",  # common only
    "ggml/src/ggml-blas",
    "ggml/src/ggml-cann",
    "ggml/src/ggml-et",
    "ggml/src/ggml-hexagon",
    "ggml/src/ggml-hip",
    "ggml/src/ggml-metal",
    "ggml/src/ggml-musa",
    "ggml/src/ggml-opencl",
    "ggml/src/ggml-openvino",
    "ggml/src/ggml-rpc",
    "ggml/src/ggml-sycl",
    "ggml/src/ggml-virtgpu",
    "ggml/src/ggml-vulkan",
    "ggml/src/ggml-webgpu",
    "ggml/src/ggml-zdnn",
    "ggml/src/ggml-zendnn",
)
SITE_PACKAGES = ("gguf", "pysbd", "diskcache")
BOOKS = ("alice_in_wonderland.txt", "walden.txt")


def load_build():
    spec = importlib.util.spec_from_file_location("skv_build", ROOT / "native" / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def kept(rel: str) -> bool:
    """rel: a path relative to vendor/llama.cpp."""
    if rel.split("/", 1)[0] not in KEEP_TOP:
        return False
    return not any(rel == d or rel.startswith(d + "/") for d in DROP)


def tree_files(build, pristine: Path, want: dict[str, bytes | None], prefix: str):
    """(path relative to prefix, bytes) of pristine/prefix with the overlay `want` applied (None = deleted)."""
    base = pristine / prefix
    seen = set()
    for p in build.iter_files(base):
        rel = p.relative_to(pristine).as_posix()
        seen.add(rel)
        if rel in want:
            if want[rel] is None:
                continue
            yield p.relative_to(base).as_posix(), want[rel]
        else:
            yield p.relative_to(base).as_posix(), p.read_bytes()
    for rel, data in sorted(want.items()):  # new files (ours)
        if rel.startswith(prefix + "/") and rel not in seen and data is not None:
            yield rel[len(prefix) + 1 :], data


def add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0
    tf.addfile(info, io.BytesIO(data))


def working_tree_bytes() -> int:
    """Tracked plus untracked-not-ignored files: what the device tool sends besides the carried paths."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    total = 0
    for rel in out.decode().split("\0"):
        p = ROOT / rel
        if rel and p.is_file():
            total += p.stat().st_size
    return total


def dir_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / ".gpu")
    args = ap.parse_args(argv)
    build = load_build()
    cache = build.cache_dir()
    sdist = cache / "sdist" / build.SDIST_NAME
    if not sdist.is_file():
        print(f"gpu_pack: {sdist} is missing: run `make setup` first", file=sys.stderr)
        return 2
    pristine = build.unpack_sdist(sdist, cache)
    natives = build.native_files()
    key = build.cache_key("sdist:" + build.SDIST_SHA256, build.build_flags(build.parse_args([])), natives)
    version = f"{build.VERSION}+skv.{key[:12]}"
    want = build.desired_files(pristine, natives, version)

    out = args.out
    if out.exists():
        shutil.rmtree(out)
    (out / "site").mkdir(parents=True)
    n_files = 0
    with tarfile.open(out / "llama.cpp.tar.gz", "w:gz", compresslevel=6) as tf:
        for rel, data in tree_files(build, pristine, want, VENDOR):
            if kept(rel):
                add_bytes(tf, "llama.cpp/" + rel, data)
                n_files += 1
    for rel, data in tree_files(build, pristine, want, "llama_cpp"):
        if rel.startswith("server/") or rel.endswith((".so", ".dylib", ".dll")):
            continue
        dst = out / "site" / "llama_cpp" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data)
    for name in SITE_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin:
            print(f"gpu_pack: the package {name} is not installed here: run `make setup`", file=sys.stderr)
            return 2
        src = Path(spec.origin).parent
        shutil.copytree(src, out / "site" / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    from engine.bench.report import books_dir

    (out / "books").mkdir()
    for b in BOOKS:
        if not (books_dir() / b).is_file():
            print(f"gpu_pack: {books_dir() / b} is missing", file=sys.stderr)
            return 2
        shutil.copy2(books_dir() / b, out / "books" / b)

    sizes = {
        "llama.cpp.tar.gz": (out / "llama.cpp.tar.gz").stat().st_size,
        "site": dir_bytes(out / "site"),
        "books": dir_bytes(out / "books"),
    }
    tree = working_tree_bytes()
    total = tree + sum(sizes.values())
    manifest = {
        "version": version,
        "key": key,
        "source_files": n_files,
        "bytes": sizes,
        "working_tree_bytes": tree,
        "total_bytes": total,
        "limit_bytes": LIMIT,
    }
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(
        f"gpu_pack: {out}: {n_files} source files, llama.cpp.tar.gz {sizes['llama.cpp.tar.gz'] / 2**20:.1f} MiB,"
        f" site {sizes['site'] / 2**20:.1f} MiB, books {sizes['books'] / 2**20:.1f} MiB; with the working tree"
        f" {total / 2**20:.1f} MiB of {LIMIT / 2**20:.0f} MiB"
    )
    if total > LIMIT:
        print("gpu_pack: over the device tool's 64 MiB limit", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
