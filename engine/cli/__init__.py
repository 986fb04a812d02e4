"""The `skv` command.

Exit codes: 0 success; 2 bad input or usage (one clear line on stderr); 1 any other failure (one clear line).
No traceback unless --debug.

Adding a subcommand: write `add_<name>_parser(subparsers)` that registers it, and a `cmd_<name>(args) -> int`,
then list both in COMMANDS (one module a command in this package; shared options in options.py). Raise UsageError
for bad input; any other exception becomes exit code 1.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable

from engine.cli.ask import add_ask_parser, cmd_ask
from engine.cli.bench import add_bench_parser, add_eval_parser, cmd_bench, cmd_eval
from engine.cli.cache import add_cache_parser, cmd_cache
from engine.cli.chat import add_chat_parser, cmd_chat
from engine.cli.errors import UsageError
from engine.cli.models import add_models_parser, cmd_models
from engine.cli.rpc import add_rpc_server_parser, cmd_rpc_server
from engine.cli.serve import add_serve_parser, cmd_serve
from engine.cli.version import add_version_parser, cmd_version
from engine.rpc import RpcError
from engine.versions import native_versions

__all__ = ["UsageError", "build_parser", "main", "native_versions"]


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line (exit 2) instead of the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


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
    "serve": (add_serve_parser, cmd_serve),
    "rpc-server": (add_rpc_server_parser, cmd_rpc_server),
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
    except RpcError as e:
        if args.debug:
            traceback.print_exc()
        print(f"skv: error: {_error_line(e)}", file=sys.stderr)
        return e.code
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
