"""`skv models`: the built-in models and local GGUF files with their memory estimates; `skv models download`."""

from __future__ import annotations

import argparse
import sys

from engine import params as defaults
from engine.cli.errors import UsageError


def cmd_models(args: argparse.Namespace) -> int:
    from engine.models import (
        BUILTIN_MODELS,
        DEFAULT_MODEL,
        ModelError,
        builtin_model_path,
        default_model_path,
        download_model,
        estimate_memory,
        list_local_models,
        read_model_info,
    )

    if getattr(args, "models_command", None) == "download":
        progress = _DownloadProgress(f"{args.repo}/{args.file}")
        try:
            path = download_model(
                args.repo, args.file, revision=args.revision, sha256=args.sha256, on_progress=progress
            )
        except ValueError as e:
            raise UsageError(str(e)) from None
        except ModelError:
            progress.end()
            raise
        progress.end()
        print(path)
        return 0
    n_ctx = getattr(args, "n_ctx", defaults.N_CTX)
    if n_ctx <= 0:
        raise UsageError(f"--n-ctx must be positive, got {n_ctx}")
    default = default_model_path()
    info = read_model_info(default)
    builtin = BUILTIN_MODELS[DEFAULT_MODEL]
    print(
        f"default: {builtin.title} ({info.architecture}, {info.n_layer} layers, context {info.context_length}, "
        f"{info.size_bytes / 2**20:.0f} MiB, {builtin.licence})"
    )
    print(f"  {info.path}")
    print(f"  memory {estimate_memory(info, n_ctx).describe()}")
    shown = {default}
    for m in BUILTIN_MODELS.values():
        if m.key == DEFAULT_MODEL:
            continue
        if not m.installed():
            print(f"built-in {m.key}: {m.title} ({m.note}; not installed: {m.install_hint()})")
            continue
        path = builtin_model_path(m.key)  # assembled on first use
        mi = read_model_info(path)
        shown.add(path)
        print(
            f"built-in {m.key}: {m.title} ({m.note}; {mi.n_layer} layers, context {mi.context_length}, "
            f"{mi.size_bytes / 2**20:.0f} MiB, {m.licence}; --model {m.key})"
        )
        print(f"  {path}")
        print(f"  memory {estimate_memory(mi, n_ctx).describe()}")
    for path in list_local_models():
        if path in shown:
            continue
        try:
            m = read_model_info(path)
            print(
                f"{m.name} ({m.architecture}, {m.n_layer} layers, context {m.context_length}, "
                f"{m.size_bytes / 2**20:.0f} MiB)"
            )
            print(f"  {path}")
            print(f"  memory {estimate_memory(m, n_ctx).describe()}")
        except ModelError as e:
            print(f"{path.name} (unreadable: {e})")
            print(f"  {path}")
    return 0


class _DownloadProgress:
    """One self-overwriting progress line on stderr."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        pct = f"{100 * done // total:3d}% " if total > 0 else ""
        tot = f" of {total / 2**20:.1f}" if total > 0 else ""
        print(
            f"\rdownloading {self.what}: {pct}({done / 2**20:.1f}{tot} MiB)",
            end="",
            file=sys.stderr,
            flush=True,
        )
        self.shown = True

    def end(self) -> None:
        if self.shown:
            print(file=sys.stderr)
            self.shown = False


def add_models_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list models (the default is assembled on first use) or download one")
    p.add_argument(
        "--n-ctx",
        type=int,
        default=defaults.N_CTX,
        help="context size for the memory estimate (default %(default)s)",
    )
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", parser_class=type(p))
    msub.add_parser(
        "list", help="the default model and the GGUF files in the models folder (the default action)"
    )
    d = msub.add_parser(
        "download", help="download a GGUF from Hugging Face (resumes an interrupted download)"
    )
    d.add_argument("repo", help="OWNER/NAME")
    d.add_argument("file", help="file in the repo, e.g. model-Q4_K_M.gguf")
    d.add_argument("--revision", help="branch, tag or commit (default main)")
    d.add_argument("--sha256", help="expected sha256 (default: the hub's LFS sha256 when it has one)")
