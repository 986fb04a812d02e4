"""Options shared by `skv ask` and `skv chat`: model, context, SentenceKV policy, protocol, sampling, documents and
ranges, and opening the session they describe (one place for every session option of the CLI)."""

from __future__ import annotations

import argparse
import sys

from engine import params as defaults
from engine.cli.errors import UsageError
from engine.params import DEFAULT_PARAMS, Layout, Policy, Remap, SelectAt, SkvParams, parse_score_distance


def add_session_options(p: argparse.ArgumentParser) -> None:
    """Model, context, policy, sampling and document options (shared by ask and chat)."""
    p.add_argument("--model", help="GGUF model file (default: the built-in Qwen2.5-Coder-0.5B-Instruct)")
    p.add_argument(
        "--n-ctx", type=int, default=defaults.N_CTX, help="context size in tokens (default %(default)s)"
    )
    p.add_argument(
        "--threads", type=int, default=defaults.N_THREADS, help="CPU threads (default %(default)s)"
    )
    p.add_argument("--gpu-layers", type=int, default=0, help="layers offloaded to the GPU (default 0)")
    add_rpc_options(p)
    p.add_argument("--doc", action="append", default=[], required=True, help="document file (repeatable)")
    p.add_argument("--policy", default="sentence", help="full, window, chunk or sentence (default sentence)")
    p.add_argument(
        "--budget",
        type=int,
        default=DEFAULT_PARAMS.budget,
        help="tokens attended per step, sink + ring included (default %(default)s)",
    )
    p.add_argument(
        "--sink",
        type=int,
        default=DEFAULT_PARAMS.sink,
        help="first tokens always attended (default %(default)s)",
    )
    p.add_argument(
        "--ring",
        type=int,
        default=DEFAULT_PARAMS.ring,
        help="recent tokens always attended (default %(default)s)",
    )
    p.add_argument(
        "--remap-positions",
        default="auto",
        choices=["auto", "on", "off"],
        help="give the attended tokens positions inside the model's trained length (auto: past it, the "
        "default; --n-ctx may then exceed the trained length: a whole book loads)",
    )
    p.add_argument(
        "--score-distance",
        default="auto",
        metavar="auto|real|N",
        help="score every sentence as if it sat N tokens before the question (auto: budget/2 where "
        "positions are remapped, else real: each at its own distance)",
    )
    p.add_argument(
        "--remap-layout",
        default="order",
        choices=["order", "stack"],
        help="where remapped retrieved sentences sit: order (their document order, compressed; the "
        "default) or stack (each right before the recent tokens, all at one distance, as InfLLM)",
    )
    p.add_argument(
        "--select-at",
        default="lag",
        choices=["lag", "step"],
        help="lag: each step's sentences are chosen from the queries before it (default, the paper's); step: inside "
        "the step from its own query (CPU builds; more answers kept, docs/BENCHMARKS.md round 15)",
    )
    p.add_argument(
        "--max-tokens",
        type=int,
        default=defaults.MAX_TOKENS,
        help="answer length limit (default %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument(
        "--stop",
        action="append",
        default=[],
        metavar="TEXT",
        help="end the answer before this text (repeatable)",
    )
    p.add_argument(
        "--prompt-format",
        default="auto",
        choices=["auto", "completion", "chat"],
        help="auto: the model's chat template when it has one, else a document-QA completion (default)",
    )
    p.add_argument(
        "--question-attention",
        default=defaults.QUESTION_ATTENTION,
        choices=defaults.QUESTION_ATTENTION_CHOICES,
        help="policy: the question is decoded under the policy (default); dense: prefilled densely over "
        "the documents, as the paper's evaluation does",
    )
    p.add_argument(
        "--sentence-start",
        default=defaults.SENTENCE_START,
        choices=defaults.SENTENCE_START_CHOICES,
        help="keep: the first token of a generated sentence keeps the last selection (default); dense: "
        "it attends the whole cache, as the paper's decoder does",
    )
    add_document_options(p)


def add_rpc_options(p: argparse.ArgumentParser) -> None:
    """--rpc and --rpc-allow-remote (a model split across machines: engine/rpc.py)."""
    p.add_argument(
        "--rpc",
        metavar="HOST:PORT[,...]",
        default="",
        help="llama.cpp RPC servers (`skv rpc-server` on each host) that hold the model's layers; with "
        "--gpu-layers N only the last N layers go there, the rest stay here",
    )
    p.add_argument(
        "--rpc-allow-remote",
        action="store_true",
        help="allow RPC servers on other machines (the protocol has no authentication or encryption)",
    )


def rpc_servers(args: argparse.Namespace) -> tuple[str, ...]:
    """The --rpc endpoints as SessionConfig takes them (RpcError, exit 2, on a malformed or refused one)."""
    if not getattr(args, "rpc", ""):
        return ()
    from engine import rpc

    endpoints = rpc.parse_endpoints(args.rpc)
    rpc.check_allowed(endpoints, args.rpc_allow_remote)
    return tuple(str(e) for e in endpoints)


def session_config(args: argparse.Namespace):
    """The SessionConfig the shared options describe; ValueError (a usage error) on bad values."""
    from engine.models import resolve_model
    from engine.session import SessionConfig

    params = SkvParams(
        Policy.parse(args.policy),
        args.budget,
        args.sink,
        args.ring,
        remap=Remap.parse(getattr(args, "remap_positions", "auto")),
        score_distance=parse_score_distance(getattr(args, "score_distance", "auto")),
        layout=Layout.parse(getattr(args, "remap_layout", "order")),
        select_at=SelectAt.parse(getattr(args, "select_at", "lag")),
    )
    if args.max_tokens < 0:
        raise ValueError(f"--max-tokens must not be negative, got {args.max_tokens}")
    if args.n_ctx < 64:
        raise ValueError(f"--n-ctx must be at least 64, got {args.n_ctx}")
    return SessionConfig(
        str(resolve_model(args.model or "")),
        n_ctx=args.n_ctx,
        n_threads=args.threads,
        n_gpu_layers=args.gpu_layers,
        rpc=rpc_servers(args),
        rpc_allow_remote=getattr(args, "rpc_allow_remote", False),
        skv=params,
        seed=args.seed,
        question_attention=args.question_attention,
        sentence_start=args.sentence_start,
        prompt_format=args.prompt_format,
    )


def add_document_options(p: argparse.ArgumentParser) -> None:
    """--range and --no-session-cache (shared by ask and chat)."""
    p.add_argument(
        "--range",
        action="append",
        default=[],
        metavar="START:END",
        help="part of a document to load: sentence indices START:END (0-based, END exclusive, either "
        "may be empty) or chars:START:END (character offsets; the sentences starting inside); "
        "the i-th --range applies to the i-th --doc (default: from the start, as much as fits)",
    )
    p.add_argument(
        "--no-session-cache",
        action="store_true",
        help="neither restore nor save the prefilled documents (see `skv cache`)",
    )


def parse_ranges(values: list[str], n_docs: int) -> dict:
    from engine.session import DocRange

    if len(values) > n_docs:
        raise ValueError(
            f"{len(values)} --range options for {n_docs} --doc files: give at most one per document"
        )
    return {i: DocRange.parse(v) for i, v in enumerate(values)}


def cli_store(args: argparse.Namespace):
    """The session store for a CLI command (None with --no-session-cache); warnings go to stderr as one line."""
    if args.no_session_cache:
        return None
    from engine.session_store import SessionStore

    return SessionStore(on_warning=lambda msg: print(f"skv: warning: {msg}", file=sys.stderr))


def question_reserve(session, question: str, answer_prefix: str, max_tokens: int) -> int:
    """Tokens kept free after the documents. Questions up to 128 tokens share one reserve, so an over-long document
    is cut at the same place and its saved session serves the next question too."""
    n_prompt = len(session.prompt_tokens(question, answer_prefix))
    return max(128, n_prompt) + max_tokens + 8


def truncation_note(report, n_ctx: int) -> str | None:
    if not report.truncated:
        return None
    of = report.n_tokens_selected if report.n_tokens_selected >= 0 else report.n_tokens_total
    what = (
        "the chosen range's"
        if report.n_tokens_selected >= 0 and report.n_tokens_selected != report.n_tokens_total
        else "document"
    )
    return (
        f"{report.n_tokens_loaded} of {of} {what} tokens fit in the context (n_ctx {n_ctx}); loaded from the "
        "start: use --range to choose another part, or raise --n-ctx"
    )


def open_cli_session(args: argparse.Namespace):
    """(session, documents, ranges, store) from the shared options (ask and chat); warnings go to stderr. Bad
    input — options, documents, ranges, a model this build cannot use — raises UsageError (exit 2)."""
    from engine.documents import DocumentError, load_document
    from engine.session import Session, SessionError, SessionInputError

    try:
        config = session_config(args)
        docs = [load_document(d) for d in args.doc]
        ranges = parse_ranges(args.range, len(docs))
        store = cli_store(args)
    except (ValueError, DocumentError) as e:
        raise UsageError(str(e)) from None
    try:
        session = Session(config)
    except SessionError as e:
        raise (UsageError(str(e)) if args.model or isinstance(e, SessionInputError) else e) from None
    for warning in session.warnings:
        print(f"skv: warning: {warning}", file=sys.stderr)
    return session, docs, ranges, store


def answer_stats(session, args: argparse.Namespace, report, result, ttft: float) -> dict:
    """`stats` of one answer in `skv ask --json` and `skv chat --json` (ttft: from the start of the ask)."""
    return {
        "policy": session.config.skv.policy.name.lower() if session.config.skv else "full",
        "budget": args.budget,
        "question_attention": args.question_attention,
        "sentence_start": args.sentence_start,
        "select_at": session.skv.get_params().select_at.name.lower() if session.skv else "lag",
        "turn": result.turn,
        "prefill_tokens": session.n_doc_tokens,
        "prefill_s": 0.0 if report.restored else round(report.prefill_s, 4),
        "session_restored": report.restored,
        "restore_s": round(report.prefill_s, 4) if report.restored else 0.0,
        "session_save_s": round(report.save_s, 4),
        "ttft_s": round(ttft, 4),
        "decode_tokens": result.decode_tokens,
        "decode_tok_s": round(result.decode_tokens / result.decode_s, 3) if result.decode_s > 0 else 0.0,
        # the answer loop's own work (selection readout, detokenizing, sentence ends, stop strings) beside llama.cpp
        "decode_python_share": round(1 - result.decode_native_s / result.decode_s, 4)
        if result.decode_s > 0
        else 0.0,
        "context_tokens": session.n_past,
        "doc_tokens_total": report.n_tokens_total,
        "doc_tokens_selected": report.n_tokens_selected
        if report.n_tokens_selected >= 0
        else report.n_tokens_total,
        "doc_tokens_loaded": report.n_tokens_loaded,
        "truncated": report.truncated,
        **session.memory(),
    }


class PrefillProgress:
    """The documents' prefill on stderr: tokens done, tok/s and an ETA — rewritten in place on a terminal, a line
    every tenth of the way otherwise (stdout stays the answer's or the JSON's)."""

    def __init__(self, stream=None) -> None:
        import time

        self._clock = time.perf_counter
        self._out = stream if stream is not None else sys.stderr
        self._tty = self._out.isatty()
        self._t0 = self._clock()
        self._next_tenth = 1
        self._shown = False  # a progress line has been printed

    def __call__(self, done: int, total: int) -> None:
        if total <= 0 or done <= 0:
            return
        if done >= total and self._next_tenth == 1 and not self._shown:
            return  # done at the first call: a saved session was restored, nothing was prefilled
        self._shown = True
        elapsed = max(self._clock() - self._t0, 1e-6)
        rate = done / elapsed
        eta = (total - done) / rate if rate > 0 else 0.0
        line = f"skv: prefill {done}/{total} tokens, {rate:.0f} tok/s, about {eta:.0f} s left"
        if done >= total:
            line = f"skv: prefill {total} tokens in {elapsed:.1f} s ({rate:.0f} tok/s)"
        if self._tty:
            print("\r" + line + " " * 8, end="\n" if done >= total else "", file=self._out, flush=True)
        elif done >= total or done * 10 >= self._next_tenth * total:
            print(line, file=self._out, flush=True)
            self._next_tenth = done * 10 // total + 1
