"""`skv ask`: one question over documents (the CLI contract of DESIGN.md)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from engine.cli.errors import UsageError
from engine.cli.options import (
    add_session_options,
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
    policy = session.config.skv.policy
    try:
        reserve = question_reserve(session, args.question, args.answer_prefix, args.max_tokens)
        t_start = time.perf_counter()
        try:
            report = session.load_documents(docs, reserve=reserve, ranges=ranges, store=store)
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
        stats = {
            "policy": policy.name.lower(),
            "budget": args.budget,
            "question_attention": args.question_attention,
            "sentence_start": args.sentence_start,
            "prefill_tokens": session.n_doc_tokens,
            "prefill_s": 0.0 if report.restored else round(report.prefill_s, 4),
            "session_restored": report.restored,
            "restore_s": round(report.prefill_s, 4) if report.restored else 0.0,
            "session_save_s": round(report.save_s, 4),
            "ttft_s": round(ttft, 4),
            "decode_tokens": result.decode_tokens,
            "decode_tok_s": round(result.decode_tokens / result.decode_s, 3) if result.decode_s > 0 else 0.0,
            "doc_tokens_total": report.n_tokens_total,
            "doc_tokens_selected": report.n_tokens_selected
            if report.n_tokens_selected >= 0
            else report.n_tokens_total,
            "doc_tokens_loaded": report.n_tokens_loaded,
            "truncated": report.truncated,
            **session.memory(),
        }
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
