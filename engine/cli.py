"""The `skv` command.

Exit codes: 0 success; 2 bad input or usage (one clear line on stderr); 1 any other failure (one clear line).
No traceback unless --debug.

Adding a subcommand: write `add_<name>_parser(subparsers)` that registers it, and a `cmd_<name>(args) -> int`,
then list both in COMMANDS. Raise UsageError for bad input; any other exception becomes exit code 1.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable

from engine import __version__
from engine.ask import add_ask_parser, cmd_ask
from engine.bench import add_bench_parser, add_eval_parser, cmd_bench, cmd_eval
from engine.chat import add_chat_parser, cmd_chat

# The llama.cpp commit each llama-cpp-python release vendors (from its CHANGELOG); the sdist carries no git data.
VENDORED_LLAMA_CPP = {"0.3.36": "0c1e57098"}


class UsageError(Exception):
    """Bad input from the user: exit code 2, message printed as one line."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line (exit 2) instead of the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def native_versions() -> dict[str, str]:
    """llama-cpp-python version, the llama.cpp commit it vendors, and the SentenceKV patch version.

    The patch version comes from `llama_skv_version` on the library llama_cpp actually loaded; "not loaded" if
    that library is a stock build (or llama_cpp cannot be imported).
    """
    out = {"llama_cpp_python": "not installed", "llama_cpp": "unknown", "native_patch": "not loaded"}
    try:
        import llama_cpp
        import llama_cpp.llama_cpp as lib_mod
    except Exception as e:  # noqa: BLE001 - a broken install is reported, not raised
        out["llama_cpp_python"] = f"not importable ({type(e).__name__}: {e})"
        return out
    out["llama_cpp_python"] = getattr(llama_cpp, "__version__", "unknown")
    out["llama_cpp"] = VENDORED_LLAMA_CPP.get(out["llama_cpp_python"].split("+")[0], "unknown")
    lib = getattr(lib_mod, "_lib", None)
    if lib is not None:
        from engine.native import NativeError, check_native

        try:
            out["native_patch"] = check_native()
        except NativeError:
            pass
        try:
            info = lib_mod.llama_print_system_info()
            out["system_info"] = (
                info.decode(errors="replace").strip() if isinstance(info, bytes) else str(info)
            )
        except Exception:  # noqa: BLE001 - optional detail
            pass
    return out


def cmd_version(args: argparse.Namespace) -> int:
    v = native_versions()
    print(f"sentencekv-desktop {__version__}")
    print(f"llama.cpp {v['llama_cpp']} (llama-cpp-python {v['llama_cpp_python']})")
    print(f"native patch {v['native_patch']}")
    from engine.models import BUILTIN_MODELS, DEFAULT_MODEL

    m = BUILTIN_MODELS[DEFAULT_MODEL]
    print(f"default model {m.title} ({m.licence}; {'installed' if m.installed() else 'not installed'})")
    if args.verbose and "system_info" in v:
        print(f"llama.cpp system info: {v['system_info']}")
    return 0


def add_version_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("version", help="print the app, llama-cpp-python and native patch versions")
    p.add_argument("--verbose", action="store_true", help="also print llama.cpp's system info")


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
    n_ctx = getattr(args, "n_ctx", 8192)
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
        print(f"built-in {m.key}: {m.title} ({m.note}; {mi.n_layer} layers, context {mi.context_length}, "
              f"{mi.size_bytes / 2**20:.0f} MiB, {m.licence}; --model {m.key})")
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
    p.add_argument("--n-ctx", type=int, default=8192, help="context size for the memory estimate (default 8192)")
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


def cmd_cache(args: argparse.Namespace) -> int:
    from engine.session_store import SessionStore

    store = SessionStore()
    if args.cache_command == "clear":
        n, freed = store.clear()
        print(f"removed {n} saved document sessions ({freed / 2**20:.1f} MiB) from {store.root}")
        return 0
    entries = store.entries()
    for e in entries:
        print(
            f"{e.key[:12]}  {e.size_bytes / 2**20:8.1f} MiB  {e.n_doc_tokens:7d} tok  n_ctx {e.n_ctx:6d}  "
            f"{e.model}  {', '.join(e.documents)}"
        )
    print(
        f"{len(entries)} saved document sessions, {store.total_bytes() / 2**20:.1f} MiB of "
        f"{store.max_bytes / 2**20:.0f} MiB in {store.root}"
    )
    return 0


def add_cache_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="saved document sessions: list or clear")
    csub = p.add_subparsers(dest="cache_command", metavar="ACTION", parser_class=type(p))
    csub.required = True
    csub.add_parser("list", help="list saved document sessions (most recently used first)")
    csub.add_parser("clear", help="delete every saved document session")


# name -> (add its parser, run it)
COMMANDS: dict[
    str, tuple[Callable[[argparse._SubParsersAction], None], Callable[[argparse.Namespace], int]]
] = {
    "version": (add_version_parser, cmd_version),
    "models": (add_models_parser, cmd_models),
    "ask": (add_ask_parser, cmd_ask),
    "chat": (add_chat_parser, cmd_chat),
    "bench": (add_bench_parser, cmd_bench),
    "eval": (add_eval_parser, cmd_eval),
    "cache": (add_cache_parser, cmd_cache),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="skv", description="SentenceKV Desktop command line")
    parser.add_argument("--version", action="store_true", help="print versions and exit")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add_parser, _ in COMMANDS.values():
        add_parser(sub)
    return parser


def _error_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        args.verbose = False
        args.command = "version"
    if not args.command:
        parser.print_usage(sys.stderr)
        print("skv: error: a command is required", file=sys.stderr)
        return 2
    _, run = COMMANDS[args.command]
    try:
        return run(args)
    except UsageError as e:
        if args.debug:
            traceback.print_exc()
        print(f"skv: error: {_error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("skv: interrupted", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - the CLI edge: one line, exit 1
        if args.debug:
            traceback.print_exc()
        print(f"skv: error: {_error_line(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
