"""Saved document sessions: the KV state and sentence table of a prefilled document set, so it is never prefilled
twice (docs/DESIGN.md, "The path of one question").

One file per key under <cache>/sessions/<key>.skvsession. The key is the sha256 of everything that makes a saved
state valid for a new context: the model's identity, the documents' text, the chosen ranges, n_ctx, the sentence
length limit, the file format, the engine version and the native patch version.

File format (little endian), written to a temp file and renamed into place:

    magic    8 bytes  b"SKVSESS\\n"
    version  u32      FORMAT_VERSION (bump on any change; an unknown version is a miss, not an error)
    n_meta   u32      length of the JSON metadata
    meta     n_meta   UTF-8 JSON: key, spans, n_doc_tokens, documents, ..., ids_len, state_len, crc32
    ids      ids_len  the context's tokens (int32)
    state    state_len  llama_state_get_data bytes (all K/V, host SentenceKV layers included)

A file that is truncated, has a bad checksum or unreadable metadata is deleted with a warning and treated as a
miss. The folder is bounded: after each save the least recently used files (by mtime; a hit touches its file) are
deleted until the total is at most `max_bytes` (default 4 GiB, env SKV_SESSION_CACHE_MAX_BYTES).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.paths import cache_dir

log = logging.getLogger(__name__)

MAGIC = b"SKVSESS\n"
FORMAT_VERSION = 1
SUFFIX = ".skvsession"
DEFAULT_MAX_BYTES = 4 << 30
MAX_BYTES_ENV = "SKV_SESSION_CACHE_MAX_BYTES"
_HEAD = struct.Struct("<8sII")


class SessionStoreError(Exception):
    """A saved session file that cannot be used (the message says why)."""


def sessions_dir() -> Path:
    return cache_dir() / "sessions"


def default_max_bytes() -> int:
    raw = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{MAX_BYTES_ENV} must be a byte count, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"{MAX_BYTES_ENV} must not be negative, got {value}")
    return value


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def make_key(parts: dict) -> str:
    """sha256 of the canonical JSON of `parts` (plus the format version)."""
    blob = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredSession:
    """A saved session read back: metadata, the context's tokens and the raw llama state."""

    key: str
    meta: dict
    input_ids: bytes  # int32 little endian, one per context token
    state: bytes


@dataclass(frozen=True, slots=True)
class StoreEntry:
    """One file in the store, for listing."""

    path: Path
    key: str
    size_bytes: int
    mtime: float
    documents: tuple[str, ...]
    model: str
    n_ctx: int
    n_doc_tokens: int


class SessionStore:
    def __init__(
        self,
        root: Path | None = None,
        max_bytes: int | None = None,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        self.root = Path(root) if root is not None else sessions_dir()
        self.max_bytes = default_max_bytes() if max_bytes is None else max_bytes
        if self.max_bytes < 0:
            raise ValueError(f"max_bytes must not be negative, got {self.max_bytes}")
        self._warn = on_warning or log.warning

    def warn(self, message: str) -> None:
        """Report a problem with a saved session that the caller recovered from (to on_warning, else the log)."""
        self._warn(message)

    @contextlib.contextmanager
    def warnings_to(self, warn: Callable[[str], None]):
        """Send this store's warnings to `warn` inside the block."""
        old, self._warn = self._warn, warn
        try:
            yield self
        finally:
            self._warn = old

    def path_for(self, key: str) -> Path:
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"a session key is 64 hex digits, got {key!r}")
        return self.root / f"{key}{SUFFIX}"

    # ------------------------------------------------------------------------------------- read

    def load(self, key: str) -> StoredSession | None:
        """The saved session for `key`, or None (missing, other format version, or corrupt: then deleted)."""
        path = self.path_for(key)
        if not path.is_file():
            return None
        try:
            stored = _read(path, with_payload=True)
        except _OtherVersion:
            return None
        except (SessionStoreError, OSError) as e:
            self._discard(path, str(e))
            return None
        if stored.meta.get("key") != key:
            self._discard(path, "its key does not match its file name")
            return None
        try:
            os.utime(path)  # most recently used
        except OSError:
            pass
        return stored

    def entries(self) -> list[StoreEntry]:
        """Every readable saved session, most recently used first (unreadable files are skipped, not deleted)."""
        out = []
        for path in self._files():
            try:
                st = path.stat()
                meta = _read(path, with_payload=False).meta
            except (SessionStoreError, _OtherVersion, OSError):
                continue
            out.append(
                StoreEntry(
                    path,
                    str(meta.get("key", "")),
                    st.st_size,
                    st.st_mtime,
                    tuple(d.get("name", "?") for d in meta.get("documents", [])),
                    str(meta.get("model_name", "?")),
                    int(meta.get("n_ctx", 0)),
                    int(meta.get("n_doc_tokens", 0)),
                )
            )
        out.sort(key=lambda e: e.mtime, reverse=True)
        return out

    def total_bytes(self) -> int:
        total = 0
        for path in self._files():
            try:
                total += path.stat().st_size
            except OSError:
                pass
        return total

    # ------------------------------------------------------------------------------------- write

    def save(self, key: str, meta: dict, input_ids: bytes, state: bytes) -> Path | None:
        """Write atomically, then prune to max_bytes. Returns the path, or None when the session alone exceeds the
        limit or the folder is not writable (a warning says so; nothing else changes)."""
        path = self.path_for(key)
        size_hint = len(input_ids) + len(state)
        if size_hint > self.max_bytes:
            self._warn(
                f"the document session ({size_hint / 2**20:.0f} MiB) is larger than the session cache limit "
                f"({self.max_bytes / 2**20:.0f} MiB, {MAX_BYTES_ENV}): not saved"
            )
            return None
        full = {
            **meta,
            "key": key,
            "ids_len": len(input_ids),
            "state_len": len(state),
            "crc32": zlib.crc32(state, zlib.crc32(input_ids)),
            "saved_at": time.time(),
        }
        blob = json.dumps(full, separators=(",", ":")).encode("utf-8")
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(_HEAD.pack(MAGIC, FORMAT_VERSION, len(blob)))
                f.write(blob)
                f.write(input_ids)
                f.write(state)
            os.replace(tmp, path)
        except OSError as e:
            self._warn(
                f"could not save the document session in {self.root} ({e.strerror or e}): "
                "the next open will prefill again"
            )
            with contextlib.suppress(OSError):  # the folder may not exist (a regular file in the path)
                tmp.unlink(missing_ok=True)
            return None
        self.prune(keep=path)
        return path

    def prune(self, keep: Path | None = None) -> list[Path]:
        """Delete least recently used files until the total is at most max_bytes; `keep` is never deleted."""
        files = []
        for path in self._files():
            try:
                st = path.stat()
            except OSError:
                continue
            files.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in files)
        removed = []
        for _, size, path in sorted(files):
            if total <= self.max_bytes:
                break
            if keep is not None and path == keep:
                continue
            path.unlink(missing_ok=True)
            total -= size
            removed.append(path)
        return removed

    def delete(self, key: str) -> bool:
        path = self.path_for(key)
        if path.exists():
            path.unlink()
            return True
        return False

    def clear(self) -> tuple[int, int]:
        """Delete every saved session (and stale temp files): (files, bytes) removed."""
        n = freed = 0
        if not self.root.is_dir():
            return 0, 0
        for path in list(self._files()) + list(self.root.glob(f".*{SUFFIX}.*.tmp")):
            try:
                size = path.stat().st_size
                path.unlink()
            except OSError:
                continue
            n += 1
            freed += size
        return n, freed

    # ------------------------------------------------------------------------------------- helpers

    def _files(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return [p for p in self.root.glob(f"*{SUFFIX}") if not p.name.startswith(".")]

    def _discard(self, path: Path, why: str) -> None:
        self._warn(f"ignoring the saved document session {path.name} ({why}): deleted; prefilling again")
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass


class _OtherVersion(Exception):
    """A file of another format version: a miss (a newer app may still read it)."""


def _read(path: Path, with_payload: bool) -> StoredSession:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(_HEAD.size)
        if len(head) != _HEAD.size:
            raise SessionStoreError("the file is truncated")
        magic, version, n_meta = _HEAD.unpack(head)
        if magic != MAGIC:
            raise SessionStoreError("not a session file")
        if version != FORMAT_VERSION:
            raise _OtherVersion(version)
        raw = f.read(n_meta)
        if len(raw) != n_meta:
            raise SessionStoreError("the file is truncated")
        try:
            meta = json.loads(raw.decode("utf-8"))
            ids_len, state_len, crc = int(meta["ids_len"]), int(meta["state_len"]), int(meta["crc32"])
        except (ValueError, KeyError, TypeError) as e:
            raise SessionStoreError(f"unreadable metadata: {e}") from None
        if size != _HEAD.size + n_meta + ids_len + state_len:
            raise SessionStoreError(
                f"the file has {size} bytes, expected {_HEAD.size + n_meta + ids_len + state_len}"
            )
        if not with_payload:
            return StoredSession(str(meta.get("key", "")), meta, b"", b"")
        ids = f.read(ids_len)
        state = f.read(state_len)
    if len(ids) != ids_len or len(state) != state_len:
        raise SessionStoreError("the file is truncated")
    if zlib.crc32(state, zlib.crc32(ids)) != crc:
        raise SessionStoreError("checksum mismatch")
    return StoredSession(str(meta.get("key", "")), meta, ids, state)
