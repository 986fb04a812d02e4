"""`skv bench chat`: what reopening a conversation costs, and that it is exact.

A session prefills N tokens of a book (saved to a temporary session store) and holds a conversation of T turns; a
second session (a reopened app) restores the saved documents and decodes the turns again from their tokens
(Session.replay). Reported: the original prefill and the turns' time, the restore (documents + replay) time and
their ratio, and whether the next turn's logits after the restore equal those after the original conversation
(bit for bit). Both sessions use the same threads, policy and budget.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from engine import params as defaults
from engine.bench import report
from engine.bench.harness import OptionError, load_book_text
from engine.params import DEFAULT_PARAMS, Policy, SkvParams

QUESTIONS = (
    "Who is the author of this text, and where does he live?",
    "What does he say about his house?",
    "What does he eat, and what does it cost him?",
    "Summarise what he thinks of his neighbours.",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="GGUF model file (default: the built-in Qwen2.5-Coder-0.5B-Instruct)")
    p.add_argument("--context", default="8k", help="document tokens to prefill (default 8k)")
    p.add_argument("--turns", type=int, default=3, help="turns before the reopen (default 3, at most 3)")
    p.add_argument("--max-tokens", type=int, default=64, help="tokens per answer (default 64)")
    p.add_argument("--threads", type=int, default=defaults.N_THREADS)
    p.add_argument("--budget", type=int, default=DEFAULT_PARAMS.budget)
    p.add_argument("--book", default="walden.txt")
    p.add_argument("--out", default="bench-results/chat", help="output folder (default bench-results/chat)")


def _greedy(log: list[np.ndarray]):
    def pick(logits: np.ndarray) -> int:
        log.append(np.array(logits, dtype=np.float32))
        return int(np.argmax(logits))

    return pick


def main_chat(args: argparse.Namespace) -> int:
    from engine.bench.harness import int_list
    from engine.documents import Document
    from engine.models import resolve_model
    from engine.session import Session, SessionConfig
    from engine.session_store import SessionStore

    try:
        n_doc = int_list(args.context)[0]
    except ValueError as e:
        raise OptionError(f"--context: {e}") from None
    if not 1 <= args.turns <= len(QUESTIONS) - 1:
        raise OptionError(f"--turns is 1 to {len(QUESTIONS) - 1}, got {args.turns}")
    model = str(resolve_model(args.model or ""))
    n_ctx = n_doc + (args.turns + 1) * (args.max_tokens + 64) + 256
    cfg = SessionConfig(
        model,
        n_ctx=n_ctx,
        n_threads=args.threads,
        skv=SkvParams(Policy.SENTENCE, args.budget, DEFAULT_PARAMS.sink, DEFAULT_PARAMS.ring),
    )
    text = load_book_text(args.book)
    doc = Document.from_text(
        args.book, text[: n_doc * 5]
    )  # ~4 characters a token: cut to n_doc by the reserve
    reserve = n_ctx - n_doc
    with tempfile.TemporaryDirectory() as tmp:
        store = SessionStore(Path(tmp) / "sessions", max_bytes=1 << 34)
        live = Session(cfg)
        try:
            t0 = time.perf_counter()
            live.load_documents([doc], reserve=reserve, store=store)
            prefill_s = time.perf_counter() - t0
            print(f"[chat] prefilled {live.n_doc_tokens} tokens in {prefill_s:.1f} s", flush=True)
            t0 = time.perf_counter()
            for k in range(args.turns):
                live.ask(QUESTIONS[k], max_tokens=args.max_tokens, keep_turns=k)
            turns_s = time.perf_counter() - t0
            turn_tokens = live.n_past - live.n_doc_tokens
            records = [t.record() for t in live.turns]
            want: list[np.ndarray] = []
            live.ask(QUESTIONS[args.turns], max_tokens=8, sampler=_greedy(want), keep_turns=args.turns)
            n_doc_tokens = live.n_doc_tokens
        finally:
            live.close()
        print(f"[chat] {args.turns} turns ({turn_tokens} tokens) in {turns_s:.1f} s", flush=True)
        again = Session(cfg)
        try:
            t0 = time.perf_counter()
            restored = again.load_documents([doc], reserve=reserve, store=store).restored
            docs_s = time.perf_counter() - t0
            for rec in records:
                again.replay(rec)
            restore_s = time.perf_counter() - t0
            got: list[np.ndarray] = []
            again.ask(QUESTIONS[args.turns], max_tokens=8, sampler=_greedy(got), keep_turns=args.turns)
        finally:
            again.close()
    exact = len(got) == len(want) and all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
    ratio = restore_s / (prefill_s + turns_s)
    data = {
        "config": {
            "model": Path(model).name,
            "doc_tokens": n_doc_tokens,
            "n_ctx": n_ctx,
            "turns": args.turns,
            "max_tokens": args.max_tokens,
            "budget": args.budget,
            "threads": args.threads,
            "book": args.book,
        },
        "prefill_s": prefill_s,
        "turns_s": turns_s,
        "turn_tokens": turn_tokens,
        "restore_documents_s": docs_s,
        "restore_s": restore_s,
        "documents_restored": restored,
        "restore_over_original": ratio,
        "next_turn_logits_identical": exact,
        "machine": report.machine_info(),
    }
    out = Path(args.out)
    report.write_json(out / "chat.json", data)
    rows = [
        [
            n_doc_tokens,
            args.turns,
            turn_tokens,
            f"{prefill_s:.1f}",
            f"{turns_s:.1f}",
            f"{docs_s:.2f}",
            f"{restore_s:.2f}",
            f"{ratio:.1%}",
            "yes" if exact else "NO",
        ]
    ]
    headers = [
        "doc tokens",
        "turns",
        "turn tokens",
        "prefill s",
        "turns s",
        "restore docs s",
        "restore all s",
        "restore / original",
        "next turn bit-identical",
    ]
    report.write_text(out / "chat.md", report.markdown_table(headers, rows) + "\n")
    print(report.text_table(headers, rows))
    return 0 if exact and restored else 1
