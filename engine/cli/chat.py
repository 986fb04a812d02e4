"""`skv chat`: a conversation over one document set loaded once, questions from stdin, one per line, until EOF.

Every question follows the earlier ones: their questions and answers stay in the context and in the sentence index
(a later turn can retrieve an earlier one), so "What did you say his name was?" works. `--fresh` asks every question
right after the documents instead (independent answers, as `skv ask`). Each answer streams to stdout and ends with
a blank line; `--json` prints one JSON object per turn instead (`answer`, `retrieved`, `stats`, as `skv ask --json`;
a turn that does not fit prints an object with `error` and the chat goes on). The documents are restored from a
saved session when one exists (see `skv cache`).
"""

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


def add_chat_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "chat", help="a conversation about documents: one question per line on stdin, until EOF"
    )
    add_session_options(p)
    p.add_argument("--answer-prefix", default="", help="start every answer with this text")
    p.add_argument(
        "--fresh",
        action="store_true",
        help="ask every question right after the documents (no conversation: independent answers)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per turn, one per line")
    p.add_argument("--ignore-eos", action="store_true", help="do not stop at end-of-sequence")


def cmd_chat(args: argparse.Namespace) -> int:
    from engine.session import ContextFullError, SessionError

    session, docs, ranges, store = open_cli_session(args)
    interactive = sys.stdin.isatty() and not args.json
    try:
        reserve = question_reserve(session, "", args.answer_prefix, args.max_tokens)
        try:
            report = session.load_documents(
                docs, reserve=reserve, ranges=ranges, store=store, on_progress=PrefillProgress()
            )
        except ValueError as e:
            raise UsageError(str(e)) from None
        note = truncation_note(report, session.n_ctx)
        if note:
            print(f"skv: note: {note}", file=sys.stderr)
        how = "restored" if report.restored else f"prefilled in {report.prefill_s:.1f} s"
        kind = "independent questions" if args.fresh else "a conversation"
        print(
            f"skv: {report.n_tokens_loaded} document tokens {how}; {kind}, one question per line, end with EOF",
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
            if args.answer_prefix and not args.json:
                print(args.answer_prefix.strip() + " ", end="", flush=True)
            t0 = time.perf_counter()
            try:
                result = session.ask(
                    question,
                    answer_prefix=args.answer_prefix,
                    max_tokens=args.max_tokens,
                    temperature=args.temperature,
                    ignore_eos=args.ignore_eos,
                    stop=tuple(args.stop),
                    keep_turns=0 if args.fresh else len(session.turns),
                    on_token=None
                    if args.json
                    else (lambda _tok, text, _step: print(text, end="", flush=True)),
                )
            except ContextFullError as e:
                # the conversation goes on: the user can start again (--fresh) or ask something shorter
                if args.json:
                    print(json.dumps({"error": str(e), "turn": len(session.turns) + 1}), flush=True)
                else:
                    print(f"skv: {e}", file=sys.stderr)
                continue
            if args.json:
                stats = answer_stats(session, args, report, result, result.ttft_s if result.tokens else 0.0)
                stats["turn_s"] = round(time.perf_counter() - t0, 4)
                print(
                    json.dumps(
                        {
                            "answer": result.answer,
                            "retrieved": session.retrieved(result.steps),
                            "stats": stats,
                        },
                        ensure_ascii=False,
                    ),
                    flush=True,
                )
            else:
                print("\n", flush=True)
        return 0
    except SessionError as e:
        raise RuntimeError(str(e)) from None
    finally:
        session.close()
