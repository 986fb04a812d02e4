"""Benchmark and evaluation harness: `skv bench speed`, `skv eval passkey` (issue 6).

Each command prints a table and writes JSON + Markdown (+ PNG plots when matplotlib is importable) to a folder.
"""

from __future__ import annotations

import argparse


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    from engine.bench import speed

    p = sub.add_parser("bench", help="benchmarks (speed)")
    bsub = p.add_subparsers(dest="bench_command", metavar="BENCH", parser_class=type(p))
    bsub.required = True
    sp = bsub.add_parser("speed", help="decode ms/token and prefill tok/s vs context: SentenceKV vs stock")
    speed.add_arguments(sp)


def cmd_bench(args: argparse.Namespace) -> int:
    from engine.bench import speed

    if args.bench_command == "speed":
        return speed.main_speed(args)
    raise AssertionError(args.bench_command)


def add_eval_parser(sub: argparse._SubParsersAction) -> None:
    from engine.bench import passkey

    p = sub.add_parser("eval", help="accuracy evaluations (passkey)")
    esub = p.add_subparsers(dest="eval_command", metavar="EVAL", parser_class=type(p))
    esub.required = True
    sp = esub.add_parser("passkey", help="passkey retrieval grid: length x depth x policy")
    passkey.add_arguments(sp)
    from engine.bench import kl

    kp = esub.add_parser("kl", help="KL(full || policy), top-1 agreement and perplexity on a long book")
    kl.add_arguments(kp)


def cmd_eval(args: argparse.Namespace) -> int:
    from engine.bench import passkey

    if args.eval_command == "passkey":
        return passkey.main_passkey(args)
    if args.eval_command == "kl":
        from engine.bench import kl

        return kl.main_kl(args)
    raise AssertionError(args.eval_command)
