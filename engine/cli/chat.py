"""`skv chat`: questions from stdin, one per line, until EOF, over one document set loaded once.

Each answer streams to stdout and ends with a blank line. Every question starts right after the documents (the
session drops the previous question and answer), so answers do not depend on each other. The documents are
restored from a saved session when one exists (see `skv cache`).
"""

from __future__ import annotations

import argparse
import sys

from engine.cli.errors import UsageError
from engine.cli.options import add_session_options, open_cli_session, question_reserve, truncation_note


def add_chat_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="ask questions about documents, one per line on stdin, until EOF")
    add_session_options(p)
    p.add_argument("--answer-prefix", default="", help="start every answer with this text")


def cmd_chat(args: argparse.Namespace) -> int:
    from engine.session import SessionError

    session, docs, ranges, store = open_cli_session(args)
    interactive = sys.stdin.isatty()
    try:
        reserve = question_reserve(session, "", args.answer_prefix, args.max_tokens)
        try:
            report = session.load_documents(docs, reserve=reserve, ranges=ranges, store=store)
        except ValueError as e:
            raise UsageError(str(e)) from None
        note = truncation_note(report, session.n_ctx)
        if note:
            print(f"skv: note: {note}", file=sys.stderr)
        how = "restored" if report.restored else f"prefilled in {report.prefill_s:.1f} s"
        print(
            f"skv: {report.n_tokens_loaded} document tokens {how}; one question per line, end with EOF",
            file=sys.stderr,
        )
        while True:
            if interactive:
                print("> ", end="", file=sys.stderr, flush=True)
            line = sys.stdin.readline()
            if not line:
                break
            question = line.strip()
            if not question:
                continue
            if args.answer_prefix:
                print(args.answer_prefix.strip() + " ", end="", flush=True)
            session.ask(
                question,
                answer_prefix=args.answer_prefix,
                max_tokens=args.max_tokens,
                temperature=args.temperature,
                stop=tuple(args.stop),
                on_token=lambda _tok, text, _step: print(text, end="", flush=True),
            )
            print("\n", flush=True)
        return 0
    except SessionError as e:
        raise RuntimeError(str(e)) from None
    finally:
        session.close()
