"""`skv chat`: questions from stdin, one per line, until EOF, over one document set loaded once.

Each answer streams to stdout and ends with a blank line. Every question starts right after the documents (the
session drops the previous question and answer), so answers do not depend on each other. The documents are
restored from a saved session when one exists (see `skv cache`).
"""

from __future__ import annotations

import argparse
import sys

from engine.ask import add_document_options, cli_store, parse_ranges, question_reserve, truncation_note
from engine.native import Policy, SkvParams


def add_chat_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="ask questions about documents, one per line on stdin, until EOF")
    p.add_argument("--model", help="GGUF model file (default: the built-in gemma-3-270m)")
    p.add_argument("--n-ctx", type=int, default=8192, help="context size in tokens (default 8192)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    p.add_argument("--gpu-layers", type=int, default=0, help="layers offloaded to the GPU (default 0)")
    p.add_argument("--doc", action="append", default=[], required=True, help="document file (repeatable)")
    p.add_argument("--policy", default="sentence", help="full, window, chunk or sentence (default sentence)")
    p.add_argument("--budget", type=int, default=1024, help="tokens attended per step, sink + ring included")
    p.add_argument("--sink", type=int, default=32, help="first tokens always attended (default 32)")
    p.add_argument("--ring", type=int, default=64, help="recent tokens always attended (default 64)")
    p.add_argument("--max-tokens", type=int, default=128, help="answer length limit (default 128)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--answer-prefix", default="", help="start every answer with this text")
    add_document_options(p)


def cmd_chat(args: argparse.Namespace) -> int:
    from engine.cli import UsageError
    from engine.documents import DocumentError, load_document
    from engine.models import default_model_path
    from engine.session import Session, SessionConfig, SessionError

    try:
        params = SkvParams(Policy.parse(args.policy), args.budget, args.sink, args.ring)
        if args.max_tokens < 0:
            raise ValueError(f"--max-tokens must not be negative, got {args.max_tokens}")
        docs = [load_document(d) for d in args.doc]
        ranges = parse_ranges(args.range, len(docs))
        store = cli_store(args)
        config = SessionConfig(args.model or str(default_model_path()), n_ctx=args.n_ctx, n_threads=args.threads,
                               n_gpu_layers=args.gpu_layers, skv=params, seed=args.seed)
    except (ValueError, DocumentError) as e:
        raise UsageError(str(e)) from None
    try:
        session = Session(config)
    except SessionError as e:
        raise (UsageError(str(e)) if args.model else e) from None
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
        print(f"skv: {report.n_tokens_loaded} document tokens {how}; one question per line, end with EOF",
              file=sys.stderr)
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
            session.ask(question, answer_prefix=args.answer_prefix, max_tokens=args.max_tokens,
                                 temperature=args.temperature,
                                 on_token=lambda _tok, text, _step: print(text, end="", flush=True))
            print("\n", flush=True)
        return 0
    except SessionError as e:
        raise RuntimeError(str(e)) from None
    finally:
        session.close()
