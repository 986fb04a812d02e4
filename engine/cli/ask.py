"""`skv ask`: one question over documents (its output is described in the README)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from engine.cli.errors import UsageError
from engine.cli.options import (
    PrefillProgress,
    add_session_options,
    answer_stats,
    open_cli_session,
    question_reserve,
    truncation_note,
)


def add_ask_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ask", help="ask one question about documents")
    p.add_argument("question", help="the question")
    add_session_options(p)
    p.add_argument("--ignore-eos", action="store_true", help="do not stop at end-of-sequence")
    p.add_argument(
        "--answer-prefix", default="", help="start the answer with this text (decoded under the policy)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")


def cmd_ask(args: argparse.Namespace) -> int:
    from engine.session import SessionError

    session, docs, ranges, store = open_cli_session(args)
    try:
        reserve = question_reserve(session, args.question, args.answer_prefix, args.max_tokens)
        t_start = time.perf_counter()
        try:
            report = session.load_documents(
                docs, reserve=reserve, ranges=ranges, store=store, on_progress=PrefillProgress()
            )
        except ValueError as e:  # a range that selects nothing
            raise UsageError(str(e)) from None
        load_s = time.perf_counter() - t_start  # prefill (+ saving the session) or restore
        note = truncation_note(report, args.n_ctx)
        if note:
            print(f"skv: note: {note}", file=sys.stderr)
        result = session.ask(
            args.question,
            answer_prefix=args.answer_prefix,
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            ignore_eos=args.ignore_eos,
            stop=tuple(args.stop),
        )
        # from the start of the ask (documents' prefill or restore included, model load excluded) to the first
        # answer token
        ttft = load_s + result.ttft_s if result.tokens else 0.0
        stats = answer_stats(session, args, report, result, ttft)
        if args.json:
            print(
                json.dumps(
                    {"answer": result.answer, "retrieved": session.retrieved(result.steps), "stats": stats},
                    ensure_ascii=False,
                )
            )
        else:
            print((args.answer_prefix + " " if args.answer_prefix else "") + result.answer.strip())
        return 0
    except SessionError as e:
        raise RuntimeError(str(e)) from None
    finally:
        session.close()
