"""Settings: one defaults table, stored with QSettings (the only place QSettings is used). The dialog is
app/settings_dialog.py, the local server it starts app/local_server.py.

Which changes need what: policy/budget/sink/ring apply at once (SetParams); model, n_ctx, threads and GPU layers
reload the model (the documents are prefilled again); the theme applies at once.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields

from PySide6.QtCore import QSettings

from engine import rpc
from engine.params import APP_MAX_TOKENS, APP_N_CTX, DEFAULT_PARAMS, POLICY_NAMES, budget_problem

POLICIES = POLICY_NAMES
THEMES = ("system", "light", "dark")


@dataclass(frozen=True, slots=True)
class AppSettings:
    model_path: str = ""  # "" = the built-in default model
    n_ctx: int = (
        APP_N_CTX  # the built-in model's trained context (lowered at load when the memory estimate needs it)
    )
    threads: int = max(1, min(8, (os.cpu_count() or 2) - 1))
    gpu_layers: int = 0
    policy: str = "sentence"
    budget: int = DEFAULT_PARAMS.budget
    sink: int = DEFAULT_PARAMS.sink
    ring: int = DEFAULT_PARAMS.ring
    max_tokens: int = APP_MAX_TOKENS
    theme: str = "system"
    rpc: str = ""  # llama.cpp RPC servers HOST:PORT,... that hold the model's layers (engine/rpc.py)
    rpc_allow_remote: int = 0  # 1: servers on other machines are allowed (the protocol is not secured)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown policy {self.policy!r}: use one of {', '.join(POLICIES)}")
        if self.theme not in THEMES:
            raise ValueError(f"unknown theme {self.theme!r}: use one of {', '.join(THEMES)}")
        problem = budget_problem(self.budget, self.sink, self.ring)
        if problem:
            raise ValueError(problem)
        if self.rpc_allow_remote not in (0, 1):
            raise ValueError(f"rpc_allow_remote must be 0 or 1, got {self.rpc_allow_remote}")
        if self.rpc:
            try:
                rpc.check_allowed(rpc.parse_endpoints(self.rpc), bool(self.rpc_allow_remote))
            except rpc.RpcError as e:
                raise ValueError(str(e).replace("--rpc-allow-remote", "the checkbox")) from None

    @property
    def rpc_servers(self) -> tuple[str, ...]:
        return tuple(str(e) for e in rpc.parse_endpoints(self.rpc)) if self.rpc else ()

    def needs_reload(self, other: AppSettings) -> bool:
        keys = ("model_path", "n_ctx", "threads", "gpu_layers", "rpc", "rpc_allow_remote")
        return any(getattr(self, k) != getattr(other, k) for k in keys)

    def params_differ(self, other: AppSettings) -> bool:
        return (self.policy, self.budget, self.sink, self.ring) != (
            other.policy,
            other.budget,
            other.sink,
            other.ring,
        )


DEFAULTS = AppSettings()
# 2: the built-in model is Qwen2.5-Coder-0.5B-Instruct (32k context); settings saved before kept gemma's 8192
SETTINGS_VERSION = 2
GEMMA_ERA_N_CTX = 8192


def builtin_setting_key(model_path: str) -> str:
    """The built-in model a model setting names ("" for a file)."""
    from engine.models import builtin_key

    return builtin_key(model_path) or ""


def builtin_choices(n_ctx: int, threads: int = 2) -> list[tuple[str, str]]:
    """(key, label) for every installed built-in model: its name, what it is for, its memory and speed estimate."""
    from engine.models import installed_builtin_models

    out = []
    for m in installed_builtin_models():
        gib = (m.size + estimate_memory_kv(m, n_ctx)) / 2**30
        out.append(
            (
                m.key,
                f"{m.title} — {m.note}, {m.size / 2**20:.0f} MiB, up to {gib:.1f} GiB at {n_ctx} "
                f"tokens, about {m.decode_tok_s_estimate(threads):.0f} tokens/s",
            )
        )
    return out


def estimate_memory_kv(model, n_ctx: int) -> int:
    """KV bytes at n_ctx from the assembled file's header; 0 before it is assembled (the label shows weights)."""
    from engine.models import ModelError, estimate_memory, read_model_info

    path = model.target()
    if not path.is_file():
        return 0
    try:
        return estimate_memory(read_model_info(path), n_ctx).kv_bytes_max
    except (ModelError, OSError):
        return 0


def fitting_ctx(model_path: str, n_ctx: int) -> tuple[int, str | None]:
    """The default context (32768) when the memory estimate allows it, else the largest that fits (a note says
    so); a context the user chose is kept as it is (the engine refuses one that cannot fit, saying why)."""
    if n_ctx != DEFAULTS.n_ctx:
        return n_ctx, None
    from engine.models import (
        ModelError,
        available_memory_bytes,
        estimate_memory,
        largest_fitting_ctx,
        read_model_info,
    )

    try:
        info = read_model_info(model_path)
    except (ModelError, OSError):
        return n_ctx, None  # the load reports it
    avail = available_memory_bytes()
    if avail is None or estimate_memory(info, n_ctx).total_bytes_max <= avail:
        return n_ctx, None
    fit = largest_fitting_ctx(info, avail)
    if fit < 2048:
        return n_ctx, None  # the load says what it needs
    return fit, (
        f"the context is {fit} tokens, not {n_ctx}: that is what fits in the free memory "
        f"({avail / 2**30:.1f} GiB)"
    )


def migrate_settings(qs: QSettings) -> str | None:
    """Bring settings saved by an older version up to date, once; returns what to tell the user (or None)."""
    try:
        version = int(qs.value("settings_version", 1 if qs.allKeys() else SETTINGS_VERSION))
    except (TypeError, ValueError):
        version = 1
    if version >= SETTINGS_VERSION:
        return None
    notice = None
    try:
        old_ctx = int(qs.value("n_ctx", DEFAULTS.n_ctx))
    except (TypeError, ValueError):
        old_ctx = DEFAULTS.n_ctx
    if old_ctx == GEMMA_ERA_N_CTX and not str(qs.value("model_path", "") or ""):
        qs.setValue("n_ctx", DEFAULTS.n_ctx)
        notice = (
            f"The built-in model is now Qwen2.5-Coder-0.5B-Instruct: the context size went from {old_ctx} to "
            f"{DEFAULTS.n_ctx} tokens (change it in Settings)"
        )
    qs.setValue("settings_version", SETTINGS_VERSION)
    qs.sync()
    return notice


def load_settings(qs: QSettings) -> AppSettings:
    """Stored values over the defaults; a stored value of the wrong type or out of range falls back to default."""
    values = {}
    for f in fields(AppSettings):
        default = getattr(DEFAULTS, f.name)
        raw = qs.value(f.name, default)
        try:
            values[f.name] = int(raw) if isinstance(default, int) else str(raw)
        except (TypeError, ValueError):
            values[f.name] = default
    try:
        return AppSettings(**values)
    except ValueError:
        return DEFAULTS


def save_settings(qs: QSettings, s: AppSettings) -> None:
    for k, v in asdict(s).items():
        qs.setValue(k, v)
    qs.setValue("settings_version", SETTINGS_VERSION)
    qs.sync()
