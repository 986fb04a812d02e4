"""`skv bench tax`: the Python work per decoded token on the product path, and the model-open metadata read.

The product's decode loop (Session.ask: sampling, the selection readout and its aggregation, detokenizing, sentence
ends, stop strings) runs over a synthetic cache of N tokens (the real weights; random K/V written by
llama_skv_debug_fill; a real book's sentence lengths declared), so a 24k context needs no 12-minute prefill. The
share is 1 - (time inside the decode call) / (the loop's time), from perf_counter around each call (not a
profiler). The GGUF header read (engine.models.read_model_info, what the app and the CLI do before llama.cpp loads
the model) is timed as well. Targets: Python <= 3 % of decode at 24k on the default model; metadata
<= 0.2 s.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from engine import params as defaults
from engine.bench import report
from engine.bench.harness import OptionError, int_list, load_book_text
from engine.params import DEFAULT_PARAMS, Policy, SkvParams


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="GGUF model file (default: the built-in Qwen2.5-Coder-0.5B-Instruct)")
    p.add_argument("--contexts", default="24k", help="cache sizes in tokens (default 24k)")
    p.add_argument("--steps", type=int, default=96, help="answer tokens decoded per context (default 96)")
    p.add_argument(
        "--repeats", type=int, default=3, help="asks per context (default 3; the median share is kept)"
    )
    p.add_argument("--threads", type=int, default=defaults.N_THREADS)
    p.add_argument("--budget", type=int, default=DEFAULT_PARAMS.budget)
    p.add_argument(
        "--book", default="walden.txt", help="whose sentence lengths are declared (default walden.txt)"
    )
    p.add_argument("--out", default="bench-results/tax", help="output folder (default bench-results/tax)")


def main_tax(args: argparse.Namespace) -> int:
    import statistics

    from engine.bench.scale import ends_from_lengths, sentence_lengths
    from engine.models import read_model_info, resolve_model
    from engine.session import Session, SessionConfig

    try:
        contexts = int_list(args.contexts)
    except ValueError as e:
        raise OptionError(f"--contexts: {e}") from None
    if args.steps < 8 or args.repeats < 1:
        raise OptionError("--steps must be at least 8 and --repeats at least 1")
    model = str(resolve_model(args.model or ""))
    t0 = time.perf_counter()
    read_model_info(Path(model))
    meta_s = time.perf_counter() - t0
    print(f"[tax] model metadata read in {meta_s * 1e3:.1f} ms", flush=True)
    text = load_book_text(args.book)
    rows, results = [], []
    for n in contexts:
        params = SkvParams(Policy.SENTENCE, args.budget, DEFAULT_PARAMS.sink, DEFAULT_PARAMS.ring)
        s = Session(SessionConfig(model, n_ctx=n + args.steps + 512, n_threads=args.threads, skv=params))
        try:
            ends = ends_from_lengths(sentence_lengths(s.tokenize, text, params.max_sentence_len), n)
            s.declare_sentences(ends)
            s.debug_fill(n, 1, s.tokenize(" the")[0])
            shares, loop_ms, native_ms = [], [], []
            for _ in range(args.repeats):
                r = s.ask(
                    "What does the author say about his house, and why?",
                    max_tokens=args.steps,
                    ignore_eos=True,
                )
                shares.append(1 - r.decode_native_s / r.decode_s)
                loop_ms.append(r.decode_s / len(r.tokens) * 1e3)
                native_ms.append(r.decode_native_s / len(r.tokens) * 1e3)
            share = statistics.median(shares)
            print(
                f"[tax] {n} tokens: loop {statistics.median(loop_ms):.2f} ms/token, decode call "
                f"{statistics.median(native_ms):.2f}, Python {share:.1%} (runs: "
                + ", ".join(f"{x:.1%}" for x in shares)
                + ")",
                flush=True,
            )
            results.append(
                {
                    "context": n,
                    "sentences": len(ends),
                    "python_share": share,
                    "runs": shares,
                    "loop_ms_per_token": statistics.median(loop_ms),
                    "native_ms_per_token": statistics.median(native_ms),
                }
            )
            rows.append(
                [
                    n,
                    len(ends),
                    f"{statistics.median(loop_ms):.2f}",
                    f"{statistics.median(native_ms):.2f}",
                    f"{share:.1%}",
                ]
            )
        finally:
            s.close()
    data = {
        "config": {
            "model": Path(model).name,
            "steps": args.steps,
            "repeats": args.repeats,
            "threads": args.threads,
            "budget": args.budget,
            "book": args.book,
        },
        "metadata_read_s": meta_s,
        "results": results,
        "machine": report.machine_info(),
    }
    out = Path(args.out)
    report.write_json(out / "tax.json", data)
    headers = ["context", "sentences", "loop ms/token", "decode call ms/token", "Python share"]
    report.write_text(
        out / "tax.md",
        report.markdown_table(headers, rows) + f"\nModel metadata read: {meta_s * 1e3:.1f} ms\n",
    )
    print(report.text_table(headers, rows))
    return 0
