"""`skv bench scale`: decode speed and memory on a random-weight model of Llama-3.2-1B's shape, up to 64k context.
Speed and memory only: the weights are random, so nothing here says anything about answers.

Protocol:
- the model (16 layers, hidden 2048, FFN 8192, 32 heads, 8 KV heads, head_dim 64, llama-spm vocabulary, Q4_0, tied
  output) is generated once by engine/bench/synthetic.py into the cache dir (or --model names a GGUF);
- the cache is filled **synthetically**: prefilling 64k tokens of a 1B model takes hours on 2 cores, so
  `llama_skv_debug_fill` marks positions [0, n) used and writes random K/V rows (the same seed in both contexts);
  the sentence table is declared from the token lengths of a real book's sentences (pysbd + the model's
  tokenizer), repeated to cover n;
- "stock" is a context with SentenceKV off (flash attention on, same n_ctx/threads); the SentenceKV context is a
  second live context; decode steps are teacher-forced over book tokens, runs interleaved as in `skv bench speed`,
  medians of all steps;
- position remapping is off (`Remap.OFF`): the decode steps of the 256k row sit past the synthetic model's trained
  262,144 tokens, where `auto` would turn every staged key (and the scored query) to virtual positions; that is the
  whole-book path's cost, not the selection's this benchmark measures.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import params as defaults
from engine.bench import report
from engine.bench.harness import (
    Candidate,
    OptionError,
    ctx_label,
    decode_plot,
    decode_run,
    load_book_text,
    median,
    policy_table,
    run_options,
)
from engine.bench.qa import parse_variant
from engine.params import DEFAULT_PARAMS, Policy, Remap, SkvParams

DEFAULT_CONTEXTS = (4096, 16384, 65536)
FULL_CONTEXTS = (1024, 4096, 16384, 32768, 65536)
MODEL_FILE = "skv-bench-1b-like-256k-q4_0.gguf"  # trained length 262,144: nothing else switches on at 256k
TARGETS = {
    "stock_over_skv_64k_min": 3.0,
    "device_over_full_kv_64k_max": 1 / 10,
    "skv_64k_over_4k_max": 1.15,
    "skv_256k_over_4k_max": 1.3,
}


@dataclass(slots=True)
class ScaleConfig:
    model: str = ""  # "" -> the generated 1B-like model
    contexts: tuple[int, ...] = DEFAULT_CONTEXTS
    threads: int = 2
    steps: int = 16
    repeats: int = 3
    budget: int = DEFAULT_PARAMS.budget
    sink: int = DEFAULT_PARAMS.sink
    ring: int = DEFAULT_PARAMS.ring
    policies: tuple[str, ...] = ("sentence", "window")
    book: str = "walden.txt"
    text: str = ""
    seed: int = 0
    n_gpu_layers: int = 0  # layers offloaded (native/tools/gpu_check.py); 0 = the CPU
    device_used: Callable[[], int] | None = (
        None  # bytes in use on the device, as its allocator reports (GPU runs)
    )
    out: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # named sentence candidates with other SkvParams (--variant LABEL=key:value,...), after the policies
    variants: tuple[tuple[str, dict[str, Any]], ...] = ()

    def candidates(self) -> list[Candidate]:
        out = [
            Candidate(
                f"{Policy.parse(p).name.lower()}/{self.budget}",
                SkvParams(Policy.parse(p), self.budget, self.sink, self.ring, remap=Remap.OFF),
            )
            for p in self.policies
        ]
        if not out or out[0].params.policy != Policy.SENTENCE:
            raise ValueError("the first policy must be sentence (the candidate the targets are about)")
        for label, opts in self.variants:
            out.append(Candidate(label, dataclasses.replace(out[0].params, **opts)))
        return out


def scale_model_path(log=print) -> Path:
    """The generated 1B-like model, written on first use (~1 minute, ~0.6 GB under the cache dir)."""
    from engine.bench.synthetic import LLAMA_1B_LIKE, find_vocab_file, write_random_llama
    from engine.paths import cache_dir

    path = cache_dir() / "models" / "bench" / MODEL_FILE
    if path.is_file():
        return path
    vocab = find_vocab_file()
    if vocab is None:
        raise FileNotFoundError(
            "the llama.cpp vocab GGUF is missing (resources/vocab): reinstall the project"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    log(f"generating the random-weight 1B-like model into {path} (once) ...")
    t0 = time.perf_counter()
    write_random_llama(path, vocab, LLAMA_1B_LIKE, quant="q4_0")
    log(f"generated in {time.perf_counter() - t0:.0f} s ({path.stat().st_size / 2**20:.0f} MiB)")
    return path


def sentence_lengths(tokenize, text: str, max_len: int) -> list[int]:
    """A real book's sentence lengths, in this model's tokens (the engine's own segmentation)."""
    from engine.sentences import tokenize_sentences

    _, sents = tokenize_sentences(text[:200_000], tokenize, max_tokens=max_len)
    lengths = [s.n_tokens for s in sents if s.n_tokens > 0]
    if not lengths:
        raise ValueError("the book gave no sentences")
    return lengths


def sentence_ends(tokenize, text: str, n_tokens: int, max_len: int) -> list[int]:
    """Sentence end positions in [1, n_tokens): a real book's sentence lengths, repeated."""
    return ends_from_lengths(sentence_lengths(tokenize, text, max_len), n_tokens)


def ends_from_lengths(lengths: list[int], n_tokens: int) -> list[int]:
    ends, pos, i = [], 0, 0
    while True:
        pos += lengths[i % len(lengths)]
        i += 1
        if pos >= n_tokens:
            return ends
        ends.append(pos)


def fill(session, n_tokens: int, seed: int, filler: int) -> None:
    """Synthetic cache of n_tokens tokens (Session.debug_fill)."""
    session.debug_fill(n_tokens, seed, filler)


@dataclass(slots=True)
class Reference:
    """The first context's SentenceKV session, kept open through the run: each later context's repeats also run it,
    so SKV(ctx) / SKV(first ctx) compares steps taken minutes apart, not a row measured half an hour earlier (this
    machine's speed drifts by more than the ratio's targets over a 256k run)."""

    session: Any
    n_tokens: int
    cont: list[int]


def n_ctx_for(cfg: ScaleConfig, n_tokens: int) -> int:
    return -(-(n_tokens + cfg.steps + 8) // 256) * 256


def open_session(cfg: ScaleConfig, model: str, n_tokens: int, params: SkvParams | None):
    """A context for n_tokens plus the decode steps: SentenceKV with `params`, stock with None."""
    from engine.session import Session, SessionConfig

    return Session(
        SessionConfig(
            model,
            n_ctx=n_ctx_for(cfg, n_tokens),
            n_threads=cfg.threads,
            skv=params,
            n_gpu_layers=cfg.n_gpu_layers,
        )
    )


def declare_sentences(session, text: str, lengths: list[int], n_tokens: int, max_len: int) -> list[int]:
    """The book's sentence lengths (tokenized on the first call, kept in `lengths`) repeated over n_tokens, declared
    to the SentenceKV session; returns the ends."""
    if not lengths:
        lengths += sentence_lengths(session.tokenize, text, max_len)
    ends = ends_from_lengths(lengths, n_tokens)
    session.skv.add_boundaries(ends)
    return ends


def decode_tokens(session, cfg: ScaleConfig, text: str) -> list[int]:
    """The teacher-forced decode steps: book tokens, the same for every context."""
    return session.tokenize(text[1000 : 1000 + cfg.steps * 12 + 200])[: cfg.steps]


def open_reference(cfg: ScaleConfig, model: str, n_tokens: int, text: str, lengths: list[int]) -> Reference:
    main = cfg.candidates()[0]
    s = open_session(cfg, model, n_tokens, main.params)
    try:
        declare_sentences(s, text, lengths, n_tokens, main.params.max_sentence_len)
        fill(s, n_tokens, cfg.seed, s.tokenize(" the")[0])
        return Reference(s, n_tokens, decode_tokens(s, cfg, text))
    except BaseException:
        s.close()
        raise


def bench_context(
    cfg: ScaleConfig,
    model: str,
    n_tokens: int,
    text: str,
    log,
    lengths: list[int],
    ref: Reference | None = None,
) -> dict:
    """`lengths`: the book's sentence lengths, filled on the first call (tokenizing the book once per run); `ref`:
    the first context's session, run in every repeat beside this context's."""
    cands = cfg.candidates()
    used = cfg.device_used or (lambda: 0)
    u0 = used()
    stock = open_session(cfg, model, n_tokens, None)
    u1 = used()
    skv = open_session(cfg, model, n_tokens, cands[0].params)
    u2 = used()
    try:
        t0 = time.perf_counter()
        filler = skv.tokenize(" the")[0]
        ends = declare_sentences(skv, text, lengths, n_tokens, cands[0].params.max_sentence_len)
        for s in (stock, skv):
            fill(s, n_tokens, cfg.seed, filler)
        fill_s = time.perf_counter() - t0
        cont = decode_tokens(skv, cfg, text)
        log(
            f"[{ctx_label(n_tokens)}] synthetic fill of {n_tokens} tokens x 2 contexts in {fill_s:.1f} s, "
            f"{len(ends)} sentences declared"
        )
        times: dict[str, list[float]] = {"stock": [], **{c.label: [] for c in cands}}
        host: dict[str, dict[str, list[float]]] = {
            c.label: {"prepare_ms": [], "after_ms": [], "rows": [], "remapped": []} for c in cands
        }

        def host_sample(label: str) -> None:
            st = skv.skv.stats()
            host[label]["prepare_ms"].append(st.t_prepare_us_last / 1e3)
            host[label]["after_ms"].append(st.t_after_us_last / 1e3)
            host[label]["rows"].append(st.rows_uploaded_last)
            host[label]["remapped"].append(int(st.positions_remapped))

        runs: dict[str, list[float]] = {k: [] for k in times}
        ref_times: list[float] = []
        ref_runs: list[float] = []
        for r in range(cfg.repeats):
            order: list[Candidate | str | None] = [None, *cands, *(["ref"] if ref is not None else [])]
            if r % 2 == 1:
                order.reverse()
            for c in order:
                if c == "ref":
                    ts = decode_run(ref.session, ref.n_tokens, ref.cont)
                    ref_times.extend(ts)
                    ref_runs.append(median(ts))
                    continue
                if c is None:
                    ts, label = decode_run(stock, n_tokens, cont), "stock"
                else:
                    skv.set_params(c.params)
                    ts = decode_run(skv, n_tokens, cont, on_step=lambda lb=c.label: host_sample(lb))
                    label = c.label
                times[label].extend(ts)
                runs[label].append(median(ts))
            log(
                f"[{ctx_label(n_tokens)}] repeat {r + 1}/{cfg.repeats}: "
                + ", ".join(f"{k} {v[-1]:.1f}" for k, v in runs.items())
                + (f", {cands[0].label} at {ctx_label(ref.n_tokens)} {ref_runs[-1]:.1f}" if ref else "")
                + " ms/tok"
            )
        skv.set_params(cands[0].params)
        st = skv.skv.stats()
        device = None
        if cfg.device_used is not None:  # each session holds its own copy of the weights: compare the two
            device = {
                "stock_session_bytes": u1 - u0,
                "skv_session_bytes": u2 - u1,
                "both_after_decode_bytes": used() - u0,
            }
        return {
            "context": n_tokens,
            "n_ctx": n_ctx_for(cfg, n_tokens),
            "fill": "synthetic (llama_skv_debug_fill: random K/V rows)",
            "fill_s": fill_s,
            "n_sentences_declared": len(ends),
            "decode_steps": len(cont),
            "repeats": cfg.repeats,
            "ms_per_token": {k: median(v) for k, v in times.items()},
            "ms_per_token_run_medians": runs,
            # the main candidate at the first context, run in the same repeats (absent for the first context)
            "first_context_interleaved": None
            if ref is None
            else {"context": ref.n_tokens, "ms_per_token": median(ref_times), "run_medians": ref_runs},
            # host work of a staged step outside the graph (llama_skv_stats), medians over every step; "remapped": the
            # steps that gave virtual positions (none: remapping is off here)
            "host_per_step": {
                k: {m: sum(v) if m == "remapped" else median(v) for m, v in d.items()}
                for k, d in host.items()
            },
            "memory": {
                "host_kv_bytes": st.host_kv_bytes,
                "full_kv_bytes": st.full_kv_bytes,
                "device_vec_bytes": st.device_vec_bytes,
                "device_stage_bytes": st.device_stage_bytes,
                "device_skv_bytes": st.device_skv_bytes,
                "n_sentences": st.n_sentences,
                "s_max": st.s_max,
                "n_skv_layers": st.n_layers,
                "on_device": st.on_device,
                "device_allocator": device,
            },
        }
    finally:
        stock.close()
        skv.close()


def summarize(results: list[dict], main: str) -> tuple[list[str], list[list[Any]]]:
    base = results[0]
    headers = [
        "ctx",
        "stock ms/tok",
        "skv ms/tok",
        "stock/skv",
        "ceiling",
        "skv/skv@1st",
        "skv@1st same runs",
        "host KV MiB",
        "dev SKV MiB",
        "dev/full KV",
        "sentences",
    ]
    rows = []
    for r in results:
        ms, m = r["ms_per_token"], r["memory"]
        ref = r.get("first_context_interleaved")
        rows.append(
            [
                ctx_label(r["context"]),
                ms["stock"],
                ms[main],
                ms["stock"] / ms[main],
                ms["stock"] / base["ms_per_token"]["stock"],
                flatness(r, base, main),
                ref["ms_per_token"] if ref else "-",
                m["host_kv_bytes"] / 2**20,
                m["device_skv_bytes"] / 2**20,
                f"1/{m['full_kv_bytes'] / m['device_skv_bytes']:.1f}" if m["device_skv_bytes"] else "-",
                m["n_sentences"],
            ]
        )
    return headers, rows


def flatness(r: dict, base: dict, main: str) -> float:
    """SKV(ctx) / SKV(first ctx): against the first context's steps taken in the same repeats where the run has them
    (`first_context_interleaved`), else against the first row."""
    ref = r.get("first_context_interleaved")
    return r["ms_per_token"][main] / (ref["ms_per_token"] if ref else base["ms_per_token"][main])


def check_targets(results: list[dict], main: str) -> list[dict]:
    by = {r["context"]: r for r in results}
    out = []
    if 65536 in by:
        r = by[65536]
        v = r["ms_per_token"]["stock"] / r["ms_per_token"][main]
        ceiling = r["ms_per_token"]["stock"] / results[0]["ms_per_token"]["stock"]
        out.append(
            {
                "target": "stock/skv at 64k >= 3",
                "value": v,
                "ceiling": ceiling,
                "met": v >= TARGETS["stock_over_skv_64k_min"],
            }
        )
        m = r["memory"]
        d = m["device_skv_bytes"] / m["full_kv_bytes"] if m["full_kv_bytes"] else None
        out.append(
            {
                "target": "device SKV bytes <= 1/10 of full KV at 64k",
                "value": d,
                "met": d is not None and d <= TARGETS["device_over_full_kv_64k_max"],
            }
        )
    if results[0]["context"] == 4096:
        for n, key, name in ((65536, "skv_64k_over_4k_max", "64k"), (262144, "skv_256k_over_4k_max", "256k")):
            if n in by:
                v = flatness(by[n], results[0], main)
                out.append(
                    {"target": f"SKV {name} / SKV 4k <= {TARGETS[key]}", "value": v, "met": v <= TARGETS[key]}
                )
    return out


def run_scale(cfg: ScaleConfig, log=print) -> dict:
    model = cfg.model or str(scale_model_path(log))
    text = cfg.text or load_book_text(cfg.book)
    main = cfg.candidates()[0].label
    info = report.machine_info()
    info["uptime_start"] = report.uptime()
    results: list[dict] = []
    lengths: list[int] = []
    t0 = time.perf_counter()
    ref = None
    try:
        for i, n in enumerate(cfg.contexts):
            results.append(bench_context(cfg, model, n, text, log, lengths, ref))
            if cfg.out is not None:
                _write(cfg, model, info, results, main, time.perf_counter() - t0, partial=True)
            if i == 0 and len(cfg.contexts) > 1:
                ref = open_reference(cfg, model, n, text, lengths)
    finally:
        if ref is not None:
            ref.session.close()
    info["uptime_end"] = report.uptime()
    return _write(cfg, model, info, results, main, time.perf_counter() - t0, partial=False)


def _write(
    cfg: ScaleConfig, model: str, info: dict, results: list[dict], main: str, wall: float, partial: bool
) -> dict:
    data = {
        "benchmark": "scale",
        "note": "speed and memory only: random weights, synthetic cache fill",
        "partial": partial,
        "config": {
            "model": model,
            "contexts": list(cfg.contexts),
            "threads": cfg.threads,
            "steps": cfg.steps,
            "repeats": cfg.repeats,
            "book": cfg.book,
            "seed": cfg.seed,
            "main": main,
            "n_gpu_layers": cfg.n_gpu_layers,
            "candidates": [c.to_json() for c in cfg.candidates()],
            **cfg.extra,
        },
        "machine": info,
        "wall_s": wall,
        "results": results,
        "targets": check_targets(results, main) if results else [],
    }
    if cfg.out is not None:
        write_outputs(cfg.out, data)
    return data


def render_markdown(data: dict) -> str:
    mi, c = data["machine"], data["config"]
    lines = [
        f"# skv bench scale ({mi['date']})",
        "",
        f"**Speed and memory only** (random weights, synthetic cache fill). Model `{Path(c['model']).name}`, "
        f"{c['threads']} threads, {c['steps']} teacher-forced steps x {c['repeats']} interleaved repeats. "
        f"Machine: {mi.get('nproc')} cores, {mi.get('cpu_model')}. Load at start `{mi.get('uptime_start')}`, "
        f"at end `{mi.get('uptime_end', '-')}`.",
        "",
    ]
    if data["results"]:
        h, rows = summarize(data["results"], c["main"])
        lines += [
            f"Main candidate `{c['main']}`; ceiling = stock(ctx)/stock(first ctx); skv/skv@1st = SKV(ctx) "
            "over SKV at the first context run in the same repeats (its ms/token in the next column); "
            "dev/full KV = device SKV bytes (vectors + staging) over the full K/V of the SKV layers.",
            "",
            report.markdown_table(h, rows),
            "",
        ]
        lines += [
            "Every candidate (median ms/token):",
            "",
            report.markdown_table(*policy_table(data["results"])),
            "",
        ]
    for t in data["targets"]:
        lines.append("- " + report.target_line(t))
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, data: dict) -> dict[str, Path]:
    out = Path(out)
    paths = {
        "json": report.write_json(out / "scale.json", data),
        "md": report.write_text(out / "scale.md", render_markdown(data)),
    }
    if data["results"] and not data.get("partial"):
        p = decode_plot(
            out / "scale_decode.png", "Decode ms/token vs context (1B-like, random weights)", data["results"]
        )
        if p:
            paths["png"] = p
    return paths


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="GGUF model (default: the generated random-weight 1B-like model)")
    p.add_argument("--contexts", help="context sizes (default 4k,16k,64k; --full: 1k,4k,16k,32k,64k)")
    p.add_argument("--full", action="store_true", help="the full grid of contexts")
    p.add_argument("--threads", type=int, default=defaults.N_THREADS)
    p.add_argument("--steps", type=int, default=16, help="decode steps per run (default 16)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default 3)")
    p.add_argument("--budget", type=int, default=DEFAULT_PARAMS.budget)
    p.add_argument("--sink", type=int, default=DEFAULT_PARAMS.sink)
    p.add_argument("--ring", type=int, default=DEFAULT_PARAMS.ring)
    p.add_argument("--policies", default="sentence,window", help="SKV policies, sentence first (default)")
    p.add_argument("--book", default="walden.txt", help="book for sentence lengths and decode tokens")
    p.add_argument("--out", default="bench-results/scale", help="output folder (default bench-results/scale)")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=KEY:VALUE,...",
        help="a named sentence candidate with other SkvParams, e.g. step=select_at:step (repeatable)",
    )


def main_scale(args: argparse.Namespace) -> int:
    try:
        contexts = run_options(args, DEFAULT_CONTEXTS, FULL_CONTEXTS)
        cfg = ScaleConfig(
            model=args.model or "",
            contexts=contexts,
            threads=args.threads,
            steps=args.steps,
            repeats=args.repeats,
            budget=args.budget,
            sink=args.sink,
            ring=args.ring,
            policies=tuple(p.strip() for p in args.policies.split(",") if p.strip()),
            book=args.book,
            out=Path(args.out),
            variants=tuple(parse_variant(v) for v in args.variant),
        )
        cfg.candidates()
        cfg.text = load_book_text(cfg.book)
    except (ValueError, FileNotFoundError) as e:
        raise OptionError(str(e)) from None
    data = run_scale(cfg, log=lambda s: print(s, file=sys.stderr, flush=True))
    h, rows = summarize(data["results"], data["config"]["main"])
    print(report.text_table(h, rows))
    for t in data["targets"]:
        print("target " + report.target_line(t))
    print(
        f"wrote {cfg.out}/scale.json, scale.md" + (", scale_decode.png" if report.have_matplotlib() else "")
    )
    return 0
