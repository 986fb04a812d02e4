"""`skv bench whole`: a whole book loaded the way the app loads it, past the model's trained length, then its
detail questions (resources/eval/qa_questions.json) asked over the whole book.

Protocol: an EngineWorker (the app's engine thread) loads the model at the app's default context (32,768) and
SentenceKV defaults (remap_positions auto); OpenDocuments(book) grows the context to the book's size
(EngineWorker._grow_for_whole) and prefills it: dense up to the trained length, the sparse chunked prefill past it.
Measured: the wall time of the load (model reopen, tokenizing, prefill), prefill tok/s around 8k and over the last
4k (from the worker's progress events), the host K/V bytes; then each of the book's questions is asked (Ask, greedy,
--max-tokens) and scored as `skv eval qa` scores (engine/bench/qa.py: score_answer). No session store: every run
prefills. Not in the default suite (a 45k-token book takes ~25 min on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

from engine import params as defaults
from engine.bench import report
from engine.bench.harness import OptionError, load_book_text
from engine.bench.passkey import tok_s_between


def run_whole(
    model: str, book: str, n_ctx: int, threads: int, max_tokens: int, limit: int | None, log=print
) -> dict:
    from engine import events as ev
    from engine.bench.qa import load_questions, score_answer
    from engine.documents import Document
    from engine.params import SkvParams
    from engine.session import SessionConfig
    from engine.worker import Ask, EngineWorker, LoadModel, OpenDocuments

    text = load_book_text(book)
    questions = [q for q in load_questions() if q.book == Path(book).name][:limit]
    lock = threading.Condition()
    events: list[tuple[float, Any]] = []

    def on_event(e) -> None:
        with lock:
            events.append((time.perf_counter(), e))
            lock.notify_all()

    def wait(rid: int) -> Any:
        with lock:
            lock.wait_for(lambda: any(ev.is_terminal(e) and e.run_id == rid for _, e in events))
            return next(e for _, e in events if ev.is_terminal(e) and e.run_id == rid)

    info = report.machine_info()
    worker = EngineWorker(on_event)
    try:
        t0 = time.perf_counter()
        rid = worker.submit(LoadModel(SessionConfig(model, n_ctx=n_ctx, n_threads=threads, skv=SkvParams())))
        if not isinstance(wait(rid), ev.Finished):
            raise RuntimeError(f"the model did not load: {wait(rid)}")
        load_model_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        rid = worker.submit(
            OpenDocuments((Document.from_text(Path(book).name, text),), reserve=512, whole=True)
        )
        end = wait(rid)
        load_s = time.perf_counter() - t1
        if not isinstance(end, ev.Finished):
            raise RuntimeError(f"the book did not load: {end}")
        mine = [(t, e) for t, e in events if getattr(e, "run_id", None) == rid]
        docs = next(e for _, e in mine if isinstance(e, ev.DocumentsLoaded))
        reopened = [e for _, e in mine if isinstance(e, ev.ModelLoaded)]
        prog = [(t, e) for t, e in mine if isinstance(e, ev.ProgressEvent) and e.phase == "prefill"]
        start = prog[0][0] if prog else t1
        curve = [(e.done, t - start) for t, e in prog if e.done > 0]
        mem = [e for _, e in mine if isinstance(e, ev.MemoryEvent)]
        n = docs.n_tokens_loaded
        log(
            f"[{book}] {n} of {docs.n_tokens_total} tokens loaded in {load_s:.0f} s (context "
            f"{reopened[-1].n_ctx if reopened else n_ctx}, trained {reopened[-1].n_ctx_train if reopened else '?'})"
        )
        rows = []
        for q in questions:
            t2 = time.perf_counter()
            a = worker.submit(Ask(q.question, answer_prefix=q.answer_prefix, max_tokens=max_tokens))
            fin = wait(a)
            answer = "".join(e.text for _, e in events if isinstance(e, ev.TokenEvent) and e.run_id == a)
            ok = isinstance(fin, ev.Finished) and score_answer(q.expected, answer)
            rows.append(
                {
                    "id": q.id,
                    "question": q.question,
                    "answer": answer.strip(),
                    "correct": ok,
                    "expected": [list(s) for s in q.expected],
                    "seconds": time.perf_counter() - t2,
                    "ended": type(fin).__name__,
                }
            )
            log(f"  {q.id}: {answer.strip()[:70]!r}{' OK' if ok else ''}")
        at8k, last4k = tok_s_between(curve, 6144, 10240), tok_s_between(curve, n - 4096, n)
        return {
            "benchmark": "whole",
            "config": {
                "model": model,
                "book": book,
                "n_ctx_start": n_ctx,
                "threads": threads,
                "max_tokens": max_tokens,
                "questions": len(questions),
            },
            "machine": {**info, "uptime_end": report.uptime()},
            "load_model_s": load_model_s,
            "load_s": load_s,
            "n_tokens_total": docs.n_tokens_total,
            "n_tokens_loaded": n,
            "truncated": docs.truncated,
            "n_ctx": reopened[-1].n_ctx if reopened else n_ctx,
            "n_ctx_train": reopened[-1].n_ctx_train if reopened else None,
            "host_kv_bytes": mem[-1].host_kv_bytes if mem else None,
            "tok_s_around_8k": at8k,
            "tok_s_last_4k": last4k,
            "last4k_over_8k": last4k / at8k if at8k and last4k else None,
            "prefill_curve": curve,
            "accuracy": sum(r["correct"] for r in rows) / len(rows) if rows else None,
            "answers": rows,
        }
    finally:
        worker.shutdown(30.0)


def render_markdown(d: dict) -> str:
    c = d["config"]
    lines = [
        f"# skv bench whole ({d['machine']['date']})",
        "",
        f"`{c['book']}` on `{Path(c['model']).name}`: {d['n_tokens_loaded']:,} of {d['n_tokens_total']:,} tokens "
        f"loaded (context {d['n_ctx']:,}, trained {d['n_ctx_train']}) in {d['load_s']:.0f} s; prefill tok/s "
        f"around 8k {report.fmt(d['tok_s_around_8k'])}, last 4k {report.fmt(d['tok_s_last_4k'])} "
        f"(ratio {report.fmt(d['last4k_over_8k'])}). Questions: {len(d['answers'])}, accuracy "
        f"{report.fmt(d['accuracy'])}.",
        "",
        report.markdown_table(
            ["id", "correct", "answer"], [[r["id"], r["correct"], r["answer"][:80]] for r in d["answers"]]
        ),
        "",
    ]
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="GGUF model (default: the built-in Qwen2.5-Coder-0.5B-Instruct)")
    p.add_argument("--book", default="christmas_carol.txt", help="book (default christmas_carol.txt)")
    p.add_argument(
        "--n-ctx",
        type=int,
        default=defaults.APP_N_CTX,
        help="the context the app opens first (default %(default)s)",
    )
    p.add_argument("--threads", type=int, default=defaults.N_THREADS)
    p.add_argument("--max-tokens", type=int, default=24)
    p.add_argument("--limit", type=int, default=None, help="at most this many of the book's questions")
    p.add_argument("--out", default="bench-results/whole", help="output folder (default bench-results/whole)")


def main_whole(args: argparse.Namespace) -> int:
    from engine.models import resolve_model

    try:
        load_book_text(args.book)
    except FileNotFoundError as e:
        raise OptionError(str(e)) from None
    d = run_whole(
        str(resolve_model(args.model or "")),
        args.book,
        args.n_ctx,
        args.threads,
        args.max_tokens,
        args.limit,
        log=lambda s: print(s, file=sys.stderr, flush=True),
    )
    out = Path(args.out)
    report.write_json(out / "whole.json", d)
    report.write_text(out / "whole.md", render_markdown(d))
    print(render_markdown(d))
    print(f"wrote {out}/whole.json, whole.md")
    return 0
