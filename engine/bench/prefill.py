"""`skv bench prefill`: what `skv ask` spends before the first answer token, row by row, against the stock library.

For each document size: reading the text into sentences and tokens (Session.plan), the dense prefill of those
tokens with SentenceKV on and, interleaved chunk by chunk, the same tokens into a stock context (SentenceKV off, the
same threads, n_batch/n_ubatch, flash attention and KV type), saving the session (the store's write), and the
question up to the first answer token. SKV's prefill overhead = skv / stock prefill time - 1 (target ≤ 3 %).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from engine import params as defaults
from engine.bench import report
from engine.bench.harness import OptionError, int_list, load_book_text, prefill_interleaved
from engine.params import DEFAULT_PARAMS, Policy, SkvParams

QUESTION = "What does the author say about his house?"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="GGUF model file (default: the built-in Qwen2.5-Coder-0.5B-Instruct)")
    p.add_argument("--contexts", default="8k,16k,24k", help="document sizes in tokens (default 8k,16k,24k)")
    p.add_argument("--threads", type=int, default=defaults.N_THREADS)
    p.add_argument(
        "--n-batch", type=int, default=512, help="prefill batch = ubatch (default 512, the session's)"
    )
    p.add_argument("--book", default="walden.txt")
    p.add_argument(
        "--out", default="bench-results/prefill", help="output folder (default bench-results/prefill)"
    )


def main_prefill(args: argparse.Namespace) -> int:
    from engine.documents import Document
    from engine.models import resolve_model
    from engine.session import Session, SessionConfig
    from engine.session.persistence import save_stored
    from engine.session_store import SessionStore

    try:
        contexts = int_list(args.contexts)
    except ValueError as e:
        raise OptionError(f"--contexts: {e}") from None
    model = str(resolve_model(args.model or ""))
    text = load_book_text(args.book)
    rows, results = [], []
    for n in contexts:
        n_ctx = n + 512
        params = SkvParams(Policy.SENTENCE, DEFAULT_PARAMS.budget, DEFAULT_PARAMS.sink, DEFAULT_PARAMS.ring)
        common = {"n_ctx": n_ctx, "n_threads": args.threads, "n_batch": args.n_batch}
        skv = Session(SessionConfig(model, skv=params, **common))
        stock = Session(SessionConfig(model, skv=None, **common))
        try:
            doc = Document.from_text(args.book, text[: n * 5])
            t0 = time.perf_counter()
            plan = skv.plan([doc], reserve=n_ctx - n)
            plan_s = time.perf_counter() - t0
            t_skv, t_stock = prefill_interleaved([skv, stock], plan, [doc])
            with tempfile.TemporaryDirectory() as tmp:
                store = SessionStore(Path(tmp) / "s", max_bytes=1 << 34)
                t = time.perf_counter()
                save_stored(skv, store, skv.store_key([doc]), [doc], plan)
                save_s = time.perf_counter() - t
            r = skv.ask(QUESTION, max_tokens=1, ignore_eos=True)
            ask_s = r.ttft_s
            n_tok = len(plan.tokens)
            ovh = t_skv / t_stock - 1
            ttft = plan_s + t_skv + save_s + ask_s
            print(
                f"[prefill] {n_tok} tokens: read {plan_s:.2f} s, prefill skv {t_skv:.1f} s / stock {t_stock:.1f} s "
                f"({ovh:+.1%}), save {save_s:.2f} s, question to first token {ask_s:.2f} s",
                flush=True,
            )
            results.append(
                {
                    "context": n,
                    "tokens": n_tok,
                    "read_s": plan_s,
                    "prefill_skv_s": t_skv,
                    "prefill_stock_s": t_stock,
                    "overhead": ovh,
                    "save_s": save_s,
                    "question_to_first_token_s": ask_s,
                    "ttft_s": ttft,
                }
            )
            rows.append(
                [
                    n_tok,
                    f"{plan_s:.2f}",
                    f"{t_skv:.1f} ({n_tok / t_skv:.0f} tok/s)",
                    f"{t_stock:.1f} ({n_tok / t_stock:.0f} tok/s)",
                    f"{ovh:+.1%}",
                    f"{save_s:.2f}",
                    f"{ask_s:.2f}",
                    f"{ttft:.1f}",
                ]
            )
        finally:
            skv.close()
            stock.close()
    headers = [
        "tokens",
        "read (split + tokenize) s",
        "prefill SKV s",
        "prefill stock s",
        "SKV overhead",
        "session save s",
        "question → 1st token s",
        "TTFT s",
    ]
    data = {
        "config": {
            "model": Path(model).name,
            "threads": args.threads,
            "n_batch": args.n_batch,
            "book": args.book,
        },
        "results": results,
        "machine": report.machine_info(),
    }
    out = Path(args.out)
    report.write_json(out / "prefill.json", data)
    report.write_text(out / "prefill.md", report.markdown_table(headers, rows) + "\n")
    print(report.text_table(headers, rows))
    return 0
