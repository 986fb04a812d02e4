"""`skv bench speed|scale` and `skv eval passkey|niah|kl|qa`: the CLI side of engine/bench (which imports nothing
from here); a benchmark's OptionError is bad input (exit 2)."""

from __future__ import annotations

import argparse

from engine.bench.harness import OptionError
from engine.cli.errors import UsageError


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    from engine.bench import scale, speed

    p = sub.add_parser("bench", help="benchmarks (speed, scale)")
    bsub = p.add_subparsers(dest="bench_command", metavar="BENCH", parser_class=type(p))
    bsub.required = True
    sp = bsub.add_parser("speed", help="decode ms/token and prefill tok/s vs context: SentenceKV vs stock")
    speed.add_arguments(sp)
    sc = bsub.add_parser("scale", help="speed and memory up to 64k on a random 1B-like model (synthetic fill)")
    scale.add_arguments(sc)


def _run(main, args: argparse.Namespace) -> int:
    try:
        return main(args)
    except OptionError as e:
        raise UsageError(str(e)) from None


def cmd_bench(args: argparse.Namespace) -> int:
    from engine.bench import speed

    if args.bench_command == "speed":
        return _run(speed.main_speed, args)
    if args.bench_command == "scale":
        from engine.bench import scale

        return _run(scale.main_scale, args)
    raise AssertionError(args.bench_command)


def add_eval_parser(sub: argparse._SubParsersAction) -> None:
    from engine.bench import passkey

    p = sub.add_parser("eval", help="accuracy evaluations (passkey, niah, kl, qa)")
    esub = p.add_subparsers(dest="eval_command", metavar="EVAL", parser_class=type(p))
    esub.required = True
    sp = esub.add_parser("passkey", help="passkey retrieval grid: length x depth x policy")
    passkey.add_arguments(sp)
    from engine.bench import kl, niah

    kp = esub.add_parser("kl", help="KL(full || policy), top-1 agreement and perplexity on a long book")
    kl.add_arguments(kp)
    np_ = esub.add_parser("niah", help="RULER-style needles in a book: single, multi-key, multi-value, variable tracking")
    niah.add_arguments(np_)
    from engine.bench import qa

    qp = esub.add_parser("qa", help="detail questions over real books: accuracy, retrieval, kept of full, memory check")
    qa.add_arguments(qp)


def cmd_eval(args: argparse.Namespace) -> int:
    from engine.bench import passkey

    if args.eval_command == "passkey":
        return _run(passkey.main_passkey, args)
    if args.eval_command == "niah":
        from engine.bench import niah

        return _run(niah.main_niah, args)
    if args.eval_command == "kl":
        from engine.bench import kl

        return _run(kl.main_kl, args)
    if args.eval_command == "qa":
        from engine.bench import qa

        return _run(qa.main_qa, args)
    raise AssertionError(args.eval_command)
