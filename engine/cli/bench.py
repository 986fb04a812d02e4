"""`skv bench speed|scale` and `skv eval passkey|niah|kl|qa`: the CLI side of engine/bench (which imports nothing
from here); a benchmark's OptionError is bad input (exit 2)."""

from __future__ import annotations

import argparse
import importlib

from engine.bench.harness import OptionError
from engine.cli.errors import UsageError

# group -> (help, {name: (help, module under engine.bench, its entry point)}); modules are imported when used
GROUPS: dict[str, tuple[str, dict[str, tuple[str, str, str]]]] = {
    "bench": (
        "benchmarks (speed, scale, chat, tax, prefill, rpc, whole)",
        {
            "speed": (
                "decode ms/token and prefill tok/s vs context: SentenceKV vs stock",
                "speed",
                "main_speed",
            ),
            "scale": (
                "speed and memory up to 64k on a random 1B-like model (synthetic fill)",
                "scale",
                "main_scale",
            ),
            "chat": (
                "reopening a conversation: documents restored + turns replayed vs the original, exactness",
                "chat",
                "main_chat",
            ),
            "tax": (
                "the Python share of each decoded token on the product path, and the model-open metadata read",
                "tax",
                "main_tax",
            ),
            "prefill": (
                "time to first token of skv ask row by row (read, prefill vs stock, save, question)",
                "prefill",
                "main_prefill",
            ),
            "rpc": (
                "a model split across loopback llama.cpp RPC servers: stock full vs SentenceKV, bytes per step",
                "rpc",
                "main_rpc",
            ),
            "whole": (
                "a whole book loaded as the app loads it (past the trained length), then its questions",
                "whole",
                "main_whole",
            ),
        },
    ),
    "eval": (
        "accuracy evaluations (passkey, niah, kl, qa)",
        {
            "passkey": ("passkey retrieval grid: length x depth x policy", "passkey", "main_passkey"),
            "kl": ("KL(full || policy), top-1 agreement and perplexity on a long book", "kl", "main_kl"),
            "niah": (
                "RULER-style needles in a book: single, multi-key, multi-value, variable tracking",
                "niah",
                "main_niah",
            ),
            "qa": (
                "detail questions over real books: accuracy, retrieval, kept of full, memory check",
                "qa",
                "main_qa",
            ),
        },
    ),
}


def _module(name: str):
    return importlib.import_module(f"engine.bench.{name}")


def _add_group(sub: argparse._SubParsersAction, group: str) -> None:
    help_, commands = GROUPS[group]
    p = sub.add_parser(group, help=help_)
    gsub = p.add_subparsers(dest=f"{group}_command", metavar=group.upper(), parser_class=type(p))
    gsub.required = True
    for name, (cmd_help, module, _entry) in commands.items():
        _module(module).add_arguments(gsub.add_parser(name, help=cmd_help))


def _run_group(group: str, args: argparse.Namespace) -> int:
    name = getattr(args, f"{group}_command")
    _help, module, entry = GROUPS[group][1][name]
    try:
        return getattr(_module(module), entry)(args)
    except OptionError as e:
        raise UsageError(str(e)) from None


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    _add_group(sub, "bench")


def add_eval_parser(sub: argparse._SubParsersAction) -> None:
    _add_group(sub, "eval")


def cmd_bench(args: argparse.Namespace) -> int:
    return _run_group("bench", args)


def cmd_eval(args: argparse.Namespace) -> int:
    return _run_group("eval", args)
