"""`skv ask`: one question over documents (the CLI contract of DESIGN.md)."""

from __future__ import annotations

import argparse
import json
import sys

from engine.native import Policy, SkvParams


def add_ask_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ask", help="ask one question about documents")
    p.add_argument("question", help="the question")
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
    p.add_argument("--ignore-eos", action="store_true", help="do not stop at end-of-sequence")
    p.add_argument("--answer-prefix", default="", help="start the answer with this text (decoded under the policy)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def cmd_ask(args: argparse.Namespace) -> int:
    from engine.cli import UsageError
    from engine.documents import DocumentError, load_document
    from engine.models import default_model_path
    from engine.session import Session, SessionConfig, SessionError

    try:
        policy = Policy.parse(args.policy)
        params = SkvParams(policy, args.budget, args.sink, args.ring)
        if args.max_tokens < 0:
            raise ValueError(f"--max-tokens must not be negative, got {args.max_tokens}")
        if args.n_ctx < 64:
            raise ValueError(f"--n-ctx must be at least 64, got {args.n_ctx}")
        docs = [load_document(d) for d in args.doc]
    except (ValueError, DocumentError) as e:
        raise UsageError(str(e)) from None

    model = args.model or str(default_model_path())
    try:
        session = Session(SessionConfig(model, n_ctx=args.n_ctx, n_threads=args.threads,
                                        n_gpu_layers=args.gpu_layers, skv=params, seed=args.seed))
    except SessionError as e:
        raise (UsageError(str(e)) if args.model else e) from None
    try:
        reserve = len(session.tokenize(session.prompt_text(args.question) + " " + args.answer_prefix))
        report = session.load_documents(docs, reserve=reserve + args.max_tokens + 8)
        if report.truncated:
            print(f"skv: note: {report.n_tokens_loaded} of {report.n_tokens_total} document tokens fit in the "
                  f"context (n_ctx {args.n_ctx}); loaded from the start", file=sys.stderr)
        result = session.ask(args.question, answer_prefix=args.answer_prefix, max_tokens=args.max_tokens,
                             temperature=args.temperature, ignore_eos=args.ignore_eos)
        # from the start of the ask (documents' prefill included, model load excluded) to the first answer token
        ttft = report.prefill_s + result.ttft_s if result.tokens else 0.0
        stats = {
            "policy": policy.name.lower(),
            "budget": args.budget,
            "prefill_tokens": session.n_doc_tokens,
            "prefill_s": round(report.prefill_s, 4),
            "session_restored": report.restored,
            "ttft_s": round(ttft, 4),
            "decode_tokens": result.decode_tokens,
            "decode_tok_s": round(result.decode_tokens / result.decode_s, 3) if result.decode_s > 0 else 0.0,
            "doc_tokens_total": report.n_tokens_total,
            "doc_tokens_loaded": report.n_tokens_loaded,
            "truncated": report.truncated,
            **session.memory(),
        }
        if args.json:
            print(json.dumps({"answer": result.answer, "retrieved": session.retrieved(result.steps), "stats": stats},
                             ensure_ascii=False))
        else:
            print((args.answer_prefix + " " if args.answer_prefix else "") + result.answer.strip())
        return 0
    except SessionError as e:
        raise RuntimeError(str(e)) from None
    finally:
        session.close()
