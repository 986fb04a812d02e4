"""`skv bench speed`: decode ms/token and prefill tok/s vs context, SentenceKV against the stock baseline.

Protocol:
- model gemma-3-270m by default, 2 threads; contexts 1k, 4k, 8k, 16k (32k with --full) of book text (walden).
- "stock" is a context with SentenceKV off (flash attention on, swa_full=False, same n_ctx/threads): the best the
  unpatched library does. The SentenceKV context is a second, live context with the same settings.
- Both contexts are prefilled densely with the same tokens, chunk by chunk, alternating between the two, so the
  prefill comparison sees the same machine load.
- Decode: teacher-forced single-token steps over the text that follows the prefilled part. One prefill per context
  serves every SKV policy: the policy changes with set_params and `Session.rewind(n_doc)` drops the steps.
  For each repeat: stock N steps, then each SKV candidate N steps (the order alternates between repeats);
  ms/token is the median over all steps of all repeats.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import params as defaults
from engine import rpc
from engine.bench import report
from engine.bench.harness import (
    Candidate,
    Log,
    OptionError,
    ctx_label,
    decode_plot,
    decode_run,
    load_book_text,
    median,
    policy_table,
    prefill_interleaved,
    run_options,
)
from engine.params import DEFAULT_PARAMS, Policy, SkvParams

DEFAULT_CONTEXTS = (1024, 4096, 8192, 16384)
FULL_CONTEXTS = (*DEFAULT_CONTEXTS, 32768)
DEFAULT_BOOK = "walden.txt"
TARGETS = {
    "skv_16k_over_1k_max": 1.10,
    "stock_over_skv_16k_min": 1.25,
    "stock_over_skv_32k_min": 1.6,
    "device_over_full_kv_32k_max": 1 / 8,
}


@dataclass(slots=True)
class SpeedConfig:
    model: str
    contexts: tuple[int, ...] = DEFAULT_CONTEXTS
    threads: int = 2
    steps: int = 32
    repeats: int = 5
    budget: int = DEFAULT_PARAMS.budget
    budgets: tuple[int, ...] = ()  # extra sentence budgets (--full: 512, 2048)
    sink: int = DEFAULT_PARAMS.sink
    ring: int = DEFAULT_PARAMS.ring
    policies: tuple[str, ...] = ("sentence", "window", "full")
    text: str = ""  # the book text (filled from book if empty)
    book: str = DEFAULT_BOOK
    n_batch: int = 512
    out: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    rpc: tuple[str, ...] = ()  # llama.cpp RPC servers holding the offloaded layers (both contexts)
    gpu_layers: int = 0  # layers offloaded (to the RPC servers with rpc; 0 there: all)

    def candidates(self) -> list[Candidate]:
        out: list[Candidate] = []
        main = f"sentence/{self.budget}"
        for name in self.policies:
            pol = Policy.parse(name)
            if pol == Policy.SENTENCE:
                out.append(Candidate(main, SkvParams(pol, self.budget, self.sink, self.ring)))
                for b in self.budgets:
                    if b != self.budget:
                        out.append(Candidate(f"sentence/{b}", SkvParams(pol, b, self.sink, self.ring)))
            else:
                out.append(
                    Candidate(
                        f"{pol.name.lower()}/{self.budget}", SkvParams(pol, self.budget, self.sink, self.ring)
                    )
                )
        if not any(c.label == main for c in out):
            raise ValueError("the policies must include sentence (the candidate the targets are about)")
        return out


def _prefix_text(text: str, n_tokens: int, chars_per_token: float = 5.0) -> str:
    """Enough text for n_tokens (English prose: ~4 chars per token), cut at a paragraph; repeated if short."""
    need = int(n_tokens * chars_per_token) + 4000
    while len(text) < need:
        text = text + "\n\n" + text
    cut = text.rfind("\n\n", 0, need)
    return text[: cut if cut > need // 2 else need]


def _prefill_interleaved(sessions: list, docs: list, reserve: int, log: Log) -> list[dict]:
    """Prefill the same documents into each session, alternating chunks; returns per-session timings."""
    plans = [s.plan(docs, reserve) for s in sessions]
    if any(p.tokens != plans[0].tokens for p in plans):
        raise RuntimeError("the sessions planned different tokens for the same documents")
    n = len(plans[0].tokens)
    spent = prefill_interleaved(sessions, plans[0], docs)
    return [{"tokens": n, "seconds": t, "tok_s": n / t if t > 0 else 0.0} for t in spent]


def _continuation(session, text: str, steps: int) -> list[int]:
    """Tokens of the text right after the prefilled part (teacher forcing)."""
    last = max((sp.char_end for sp in session.spans if sp.doc >= 0), default=0)
    toks = session.tokenize(text[last : last + steps * 12 + 200])
    while len(toks) < steps:
        toks = toks + toks + session.tokenize(" and")
    return toks[:steps]


def bench_context(cfg: SpeedConfig, n_tokens: int, text: str, log: Log) -> dict:
    from engine.documents import Document
    from engine.session import Session, SessionConfig

    cands = cfg.candidates()
    # n_ctx a multiple of 256: llama.cpp pads the context and Session.n_ctx reports the padded size, while
    # Llama.input_ids keeps the requested one (an unpadded n_ctx overfills input_ids)
    n_ctx = -(-(n_tokens + cfg.steps + 8) // 256) * 256
    reserve = n_ctx - n_tokens
    doc = Document.from_text(cfg.book, _prefix_text(text, n_tokens))
    where = {"rpc": cfg.rpc, "n_gpu_layers": cfg.gpu_layers, "n_threads": cfg.threads, "n_batch": cfg.n_batch}
    stock = Session(SessionConfig(cfg.model, n_ctx=n_ctx, skv=None, **where))
    skv = Session(SessionConfig(cfg.model, n_ctx=n_ctx, skv=cands[0].params, **where))
    try:
        log(f"[{n_tokens}] prefill {n_ctx - reserve} tokens into stock and skv contexts (interleaved) ...")
        pre = _prefill_interleaved([stock, skv], [doc], reserve, log)
        n_doc = skv.n_doc_tokens
        log(f"[{n_tokens}] prefill: stock {pre[0]['tok_s']:.0f} tok/s, skv {pre[1]['tok_s']:.0f} tok/s")
        cont = _continuation(skv, doc.text, cfg.steps)
        times: dict[str, list[float]] = {"stock": []}
        runs: dict[str, list[float]] = {"stock": []}
        uploads: dict[str, list[int]] = {}
        attended: dict[str, int] = {}
        for c in cands:
            times[c.label] = []
            runs[c.label] = []
            uploads[c.label] = []
        for r in range(cfg.repeats):
            order: list[Candidate | None] = [None, *cands]
            if r % 2 == 1:
                order.reverse()
            for c in order:
                if c is None:
                    ts = decode_run(stock, n_doc, cont)
                    label = "stock"
                else:
                    skv.set_params(c.params)
                    before = skv.skv.stats().rows_uploaded_total
                    ts = decode_run(skv, n_doc, cont)
                    st = skv.skv.stats()
                    uploads[c.label].append(st.rows_uploaded_total - before)
                    attended[c.label] = st.attended_last
                    label = c.label
                times[label].extend(ts)
                runs[label].append(median(ts))
            log(
                f"[{n_tokens}] repeat {r + 1}/{cfg.repeats}: "
                + ", ".join(f"{k} {v[-1]:.2f}" for k, v in runs.items())
                + " ms/tok"
            )
        skv.set_params(cands[0].params)
        st = skv.skv.stats()
        mem = {
            "host_kv_bytes": st.host_kv_bytes,
            "device_vec_bytes": st.device_vec_bytes,
            "device_stage_bytes": st.device_stage_bytes,
            "device_skv_bytes": st.device_skv_bytes,
            "native_full_kv_bytes": st.full_kv_bytes,
            "all_layers_full_kv_bytes": skv.full_kv_bytes(),
            "device_over_skv_layers_kv": st.device_skv_bytes / st.host_kv_bytes if st.host_kv_bytes else None,
            "n_sentences": st.n_sentences,
            "s_max": st.s_max,
            "sent_cap": st.sent_cap,
            "n_skv_layers": st.n_layers,
            "on_device": st.on_device,
        }
        return {
            "context": n_tokens,
            "n_ctx": n_ctx,
            "prefill_tokens": n_doc,
            "decode_steps": cfg.steps,
            "repeats": cfg.repeats,
            "prefill": {
                "stock": pre[0],
                "skv": pre[1],
                "overhead_pct": 100.0 * (pre[1]["seconds"] / pre[0]["seconds"] - 1.0),
            },
            "ms_per_token": {k: median(v) for k, v in times.items()},
            "ms_per_token_run_medians": runs,
            "ms_per_token_min_run": {k: min(v) for k, v in runs.items()},
            "rows_uploaded_per_step": {
                k: (sum(v) / (len(v) * cfg.steps) if v else 0.0) for k, v in uploads.items()
            },
            "attended_last": attended,
            "memory": mem,
        }
    finally:
        stock.close()
        skv.close()


def summarize(results: list[dict], main: str) -> tuple[list[str], list[list[Any]]]:
    """The main table: one row per context."""
    base = results[0]
    headers = [
        "ctx",
        "tokens",
        "stock ms/tok",
        "skv ms/tok",
        "stock/skv",
        "ceiling",
        "skv/skv@1st",
        "prefill stock tok/s",
        "prefill skv tok/s",
        "prefill ovh %",
        "host KV MiB",
        "dev SKV MiB",
        "dev/KV",
    ]
    rows = []
    for r in results:
        ms = r["ms_per_token"]
        m = r["memory"]
        rows.append(
            [
                ctx_label(r["context"]),
                r["prefill_tokens"],
                ms["stock"],
                ms[main],
                ms["stock"] / ms[main],
                ms["stock"] / base["ms_per_token"]["stock"] if r is not base else 1.0,
                ms[main] / base["ms_per_token"][main],
                r["prefill"]["stock"]["tok_s"],
                r["prefill"]["skv"]["tok_s"],
                r["prefill"]["overhead_pct"],
                m["host_kv_bytes"] / 2**20,
                m["device_skv_bytes"] / 2**20,
                f"1/{m['host_kv_bytes'] / m['device_skv_bytes']:.1f}" if m["device_skv_bytes"] else "-",
            ]
        )
    return headers, rows


def check_targets(results: list[dict], main: str) -> list[dict]:
    by = {r["context"]: r for r in results}
    out = []
    first = results[0]
    if 16384 in by and first["context"] == 1024:
        v = by[16384]["ms_per_token"][main] / first["ms_per_token"][main]
        out.append(
            {"target": "skv(16k) / skv(1k) <= 1.10", "value": v, "met": v <= TARGETS["skv_16k_over_1k_max"]}
        )
    for ctx, key in ((16384, "stock_over_skv_16k_min"), (32768, "stock_over_skv_32k_min")):
        if ctx in by:
            r = by[ctx]
            v = r["ms_per_token"]["stock"] / r["ms_per_token"][main]
            ceiling = (
                r["ms_per_token"]["stock"] / first["ms_per_token"]["stock"]
                if first["context"] == 1024
                else None
            )
            out.append(
                {
                    "target": f"stock/skv at {ctx_label(ctx)} >= {TARGETS[key]}",
                    "value": v,
                    "ceiling": ceiling,
                    "met": v >= TARGETS[key],
                }
            )
    if 32768 in by:
        m = by[32768]["memory"]
        v = m["device_skv_bytes"] / m["host_kv_bytes"] if m["host_kv_bytes"] else None
        out.append(
            {
                "target": "device SKV bytes <= 1/8 of the SKV layers' full K/V at 32k",
                "value": v,
                "met": v is not None and v <= TARGETS["device_over_full_kv_32k_max"],
            }
        )
    return out


def run_speed(cfg: SpeedConfig, log: Log = print) -> dict:
    text = cfg.text or load_book_text(cfg.book)
    main = cfg.candidates()[0].label
    info = report.machine_info()
    info["uptime_start"] = report.uptime()
    results = []
    t0 = time.perf_counter()
    for n in cfg.contexts:
        results.append(bench_context(cfg, n, text, log))
        if cfg.out is not None:  # partial results survive an interrupted long run
            _write(cfg, info, results, main, time.perf_counter() - t0, partial=True)
    info["uptime_end"] = report.uptime()
    return _write(cfg, info, results, main, time.perf_counter() - t0, partial=False)


def _write(cfg: SpeedConfig, info: dict, results: list[dict], main: str, wall: float, partial: bool) -> dict:
    data = {
        "benchmark": "speed",
        "partial": partial,
        "config": {
            "model": cfg.model,
            "contexts": list(cfg.contexts),
            "threads": cfg.threads,
            "steps": cfg.steps,
            "repeats": cfg.repeats,
            "book": cfg.book,
            "n_batch": cfg.n_batch,
            "candidates": [c.to_json() for c in cfg.candidates()],
            "main": main,
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
    results = data["results"]
    main = data["config"]["main"]
    mi = data["machine"]
    lines = [
        f"# skv bench speed ({data['machine']['date']})",
        "",
        f"Model `{Path(data['config']['model']).name}`, {data['config']['threads']} threads, "
        f"{data['config']['steps']} teacher-forced decode steps x {data['config']['repeats']} interleaved "
        f"repeats per candidate; book `{data['config']['book']}`. Machine: {mi.get('nproc')} cores, "
        f"{mi.get('cpu_model')}. Load at start: `{mi.get('uptime_start')}`; at end: "
        f"`{mi.get('uptime_end', '-')}`. Native patch: {mi.get('native_patch')}.",
        "",
    ]
    if results:
        h, rows = summarize(results, main)
        lines += [
            f"Main candidate: `{main}`. ceiling = stock(ctx)/stock({ctx_label(results[0]['context'])}) "
            "(the zero-overhead SKV limit); dev/KV = device SKV bytes (vectors + staging) over the SKV "
            "layers' full K/V (host_kv_bytes).",
            "",
            report.markdown_table(h, rows),
            "",
        ]
        h, rows = policy_table(results)
        lines += ["Every candidate (median ms/token):", "", report.markdown_table(h, rows), ""]
    if data["targets"]:
        lines += ["Targets:", ""]
        for t in data["targets"]:
            lines.append("- " + report.target_line(t))
        lines.append("")
    return "\n".join(lines)


def write_outputs(out: Path, data: dict) -> dict[str, Path]:
    out = Path(out)
    paths = {
        "json": report.write_json(out / "speed.json", data),
        "md": report.write_text(out / "speed.md", render_markdown(data)),
    }
    if data["results"] and not data.get("partial"):
        p = decode_plot(
            out / "speed_decode.png", "Decode ms/token vs context (gemma-3-270m)", data["results"]
        )
        if p:
            paths["png"] = p
    return paths


# ----------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="GGUF model file (default: the built-in Qwen2.5-Coder-0.5B-Instruct)")
    p.add_argument("--contexts", help="context sizes, e.g. 1k,4k,8k,16k (default; --full adds 32k)")
    p.add_argument("--full", action="store_true", help="full grid: 32k context, budgets 512/1024/2048, chunk")
    p.add_argument(
        "--threads", type=int, default=defaults.N_THREADS, help="CPU threads (default %(default)s)"
    )
    p.add_argument("--steps", type=int, default=32, help="decode steps per run (default 32)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats (default 5)")
    p.add_argument(
        "--budget", type=int, default=DEFAULT_PARAMS.budget, help="main budget tau (default %(default)s)"
    )
    p.add_argument("--sink", type=int, default=DEFAULT_PARAMS.sink)
    p.add_argument("--ring", type=int, default=DEFAULT_PARAMS.ring)
    p.add_argument(
        "--policies", default="sentence,window,full", help="SKV policies (default sentence,window,full)"
    )
    p.add_argument("--book", default=DEFAULT_BOOK, help="book file or name in resources/books")
    p.add_argument("--out", default="bench-results/speed", help="output folder (default bench-results/speed)")
    p.add_argument(
        "--rpc", default="", metavar="HOST:PORT[,...]", help="llama.cpp RPC servers (both contexts)"
    )
    p.add_argument("--gpu-layers", type=int, default=0, help="layers offloaded (with --rpc, 0: all)")


def config_from_args(args: argparse.Namespace) -> SpeedConfig:
    from engine.models import resolve_model

    contexts = run_options(args, DEFAULT_CONTEXTS, FULL_CONTEXTS)
    policies = tuple(p.strip() for p in args.policies.split(",") if p.strip())
    budgets: tuple[int, ...] = ()
    if args.full:
        budgets = (512, 1024, 2048)
        if "chunk" not in policies:
            policies = (*policies, "chunk")
    for p in policies:
        Policy.parse(p)
    cfg = SpeedConfig(
        model=str(resolve_model(args.model or "")),
        contexts=contexts,
        threads=args.threads,
        steps=args.steps,
        repeats=args.repeats,
        budget=args.budget,
        budgets=budgets,
        sink=args.sink,
        ring=args.ring,
        policies=policies,
        book=args.book,
        out=Path(args.out),
        rpc=tuple(str(e) for e in rpc.parse_endpoints(args.rpc)) if args.rpc else (),
        gpu_layers=args.gpu_layers,
    )
    cfg.candidates()  # validates budgets against sink + ring
    return cfg


def main_speed(args: argparse.Namespace) -> int:
    try:
        cfg = config_from_args(args)
        cfg.text = load_book_text(cfg.book)
    except (ValueError, FileNotFoundError) as e:
        raise OptionError(str(e)) from None
    data = run_speed(cfg, log=lambda s: print(s, file=sys.stderr, flush=True))
    main = data["config"]["main"]
    h, rows = summarize(data["results"], main)
    print(report.text_table(h, rows))
    print()
    h, rows = policy_table(data["results"])
    print(report.text_table(h, rows))
    for t in data["targets"]:
        print("target " + report.target_line(t))
    print(
        f"wrote {cfg.out}/speed.json, speed.md" + (", speed_decode.png" if report.have_matplotlib() else "")
    )
    return 0
