"""`skv eval kl`: fidelity of each policy against dense attention on long natural text (PG-19 style).

One dense prefill of a long prefix of a book; then, for each policy and budget, the next N tokens of the book are
decoded one at a time (teacher-forced, the question-free version of data flow 3) and their logits compared with the
dense decode of the same tokens: mean and p99 KL(full || policy), top-1 agreement, and perplexity of the real text.
Every policy, dense included, starts from the same restored snapshot of the prefill (`Session.restore`: exact and
seeded, as every ask starts; a tail removal is not exact on sliding-window models).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine import params as defaults
from engine.bench.qa import parse_variant
from engine.bench.report import books_dir, machine_info, markdown_table, text_table, write_json, write_text
from engine.params import DEFAULT_PARAMS, Policy, SkvParams


@dataclass(frozen=True, slots=True)
class KlConfig:
    model: str
    book: str = "frankenstein.txt"
    n_ctx: int = defaults.N_CTX
    prefix_tokens: int = 6000
    n_eval: int = 128
    budgets: tuple[int, ...] = (1024,)
    policies: tuple[str, ...] = ("sentence", "chunk", "window")
    sink: int = DEFAULT_PARAMS.sink
    ring: int = DEFAULT_PARAMS.ring
    threads: int = 2
    out: Path = field(default=Path("bench-out/kl"))
    # named candidates beside the policies (--variant LABEL=key:value,...): SkvParams over sentence at each budget
    variants: tuple[tuple[str, dict], ...] = ()

    def __post_init__(self) -> None:
        if self.prefix_tokens + self.n_eval + 8 > self.n_ctx:
            raise ValueError(
                f"prefix {self.prefix_tokens} + eval {self.n_eval} tokens do not fit n_ctx {self.n_ctx}"
            )


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def compare_logits(dense: np.ndarray, other: np.ndarray, targets: np.ndarray) -> dict:
    """KL(dense || other) per position, top-1 agreement, and perplexities of the targets (next tokens)."""
    lp, lq = _log_softmax(dense), _log_softmax(other)
    kl = (np.exp(lp) * (lp - lq)).sum(axis=-1)
    idx = np.arange(len(targets))
    return {
        "kl_mean": float(kl.mean()),
        "kl_p99": float(np.percentile(kl, 99)),
        "kl_max": float(kl.max()),
        "top1_agree": float((dense.argmax(-1) == other.argmax(-1)).mean()),
        "ppl": float(np.exp(-lq[idx, targets].mean())),
        "ppl_dense": float(np.exp(-lp[idx, targets].mean())),
    }


def run_kl(cfg: KlConfig, log=print) -> dict:
    from engine.documents import Document
    from engine.session import Session, SessionConfig

    t_start = time.perf_counter()
    path = Path(cfg.book) if Path(cfg.book).exists() else books_dir() / cfg.book
    if not path.exists():
        raise ValueError(f"book {cfg.book} not found (looked in {books_dir()})")
    text = path.read_text(encoding="utf-8", errors="replace")
    session = Session(
        SessionConfig(
            cfg.model,
            n_ctx=cfg.n_ctx,
            n_threads=cfg.threads,
            skv=SkvParams(budget=max(cfg.budgets), sink=cfg.sink, ring=cfg.ring),
        )
    )
    try:
        doc = Document.from_text(path.name, text, str(path))
        plan = session.plan([doc], reserve=8)
        tokens, spans = plan.tokens, plan.spans
        n_total = cfg.prefix_tokens + cfg.n_eval
        if len(tokens) < n_total:
            raise ValueError(f"{path.name} has {len(tokens)} tokens in n_ctx {cfg.n_ctx}: need {n_total}")
        # dense prefill of the prefix; the evaluated text's sentences are declared too (they close as decoded)
        t0 = time.perf_counter()
        session.prefill(
            tokens[: cfg.prefix_tokens],
            [s for s in spans if s.tok_end <= cfg.prefix_tokens],
            [doc],
            declare=[s.tok_end for s in spans if s.tok_end <= n_total],
        )
        prefill_s = time.perf_counter() - t0
        snap = session.snapshot()
        log(f"prefilled {cfg.prefix_tokens} tokens of {path.name} in {prefill_s:.1f} s")
        targets = np.array(tokens[cfg.prefix_tokens + 1 : n_total + 1] + [tokens[n_total - 1]])[: cfg.n_eval]

        def decode_under(policy: Policy, budget: int, opts: dict | None = None) -> np.ndarray:
            session.set_params(SkvParams(policy, budget, cfg.sink, cfg.ring, **(opts or {})))
            # the restore declares the prefix's sentences; declare the evaluated text's sentences again
            session.restore(snap)
            session.declare_sentences([s.tok_end for s in spans if cfg.prefix_tokens < s.tok_end <= n_total])
            return session.teacher_force(tokens[cfg.prefix_tokens : cfg.prefix_tokens + cfg.n_eval])

        dense = decode_under(Policy.FULL, max(cfg.budgets))
        rows = []
        cands = [(name, Policy.parse(name), {}) for name in cfg.policies]
        cands += [(label, Policy.SENTENCE, opts) for label, opts in cfg.variants]
        for budget in cfg.budgets:
            for name, policy, opts in cands:
                t0 = time.perf_counter()
                other = decode_under(
                    policy, opts.get("budget", budget), {k: v for k, v in opts.items() if k != "budget"}
                )
                m = compare_logits(dense, other, targets)
                m.update(policy=name, budget=budget, decode_s=time.perf_counter() - t0)
                rows.append(m)
                log(
                    f"{name}/{budget}: KL mean {m['kl_mean']:.4f}, p99 {m['kl_p99']:.4f}, "
                    f"top-1 {m['top1_agree']:.3f}, ppl {m['ppl']:.2f} (dense {m['ppl_dense']:.2f})"
                )
    finally:
        session.close()
    return {
        "benchmark": "kl",
        "machine": machine_info(),
        "prefill_s": prefill_s,
        "rows": rows,
        "wall_s": time.perf_counter() - t_start,
    }


HEADERS = ["policy", "budget", "KL mean", "KL p99", "top-1 agree", "ppl", "ppl dense"]


def _table_rows(rows: list[dict]) -> list[list]:
    return [
        [
            r["policy"],
            r["budget"],
            round(r["kl_mean"], 4),
            round(r["kl_p99"], 4),
            round(r["top1_agree"], 3),
            round(r["ppl"], 2),
            round(r["ppl_dense"], 2),
        ]
        for r in rows
    ]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="GGUF model (default: the built-in Qwen2.5-Coder-0.5B-Instruct)")
    p.add_argument("--book", default="frankenstein.txt", help="book file or name in resources/books")
    p.add_argument("--n-ctx", type=int, default=defaults.N_CTX)
    p.add_argument(
        "--prefix", type=int, default=6000, help="tokens prefilled densely before the evaluated ones"
    )
    p.add_argument("--n-eval", type=int, default=128, help="tokens decoded teacher-forced and compared")
    p.add_argument(
        "--budgets", default=str(DEFAULT_PARAMS.budget), help="comma-separated budgets (default %(default)s)"
    )
    p.add_argument("--policies", default="sentence,chunk,window")
    p.add_argument("--threads", type=int, default=defaults.N_THREADS)
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=KEY:VALUE,...",
        help="a named sentence candidate with other SkvParams, e.g. xs=exclude_sink:1 (repeatable)",
    )
    p.add_argument("--out", default="bench-out/kl", help="folder for kl.json and kl.md")


def main_kl(args: argparse.Namespace) -> int:
    from engine.models import resolve_model

    cfg = KlConfig(
        model=str(resolve_model(args.model or "")),
        book=args.book,
        n_ctx=args.n_ctx,
        prefix_tokens=args.prefix,
        n_eval=args.n_eval,
        budgets=tuple(int(b) for b in args.budgets.split(",")),
        policies=tuple(p.strip() for p in args.policies.split(",")),
        threads=args.threads,
        out=Path(args.out),
        variants=tuple(parse_variant(v) for v in args.variant),
    )
    for name in cfg.policies:
        Policy.parse(name)
    data = run_kl(cfg)
    data["config"] = {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in ((f, getattr(cfg, f)) for f in cfg.__dataclass_fields__)
    }
    print(text_table(HEADERS, _table_rows(data["rows"])))
    cfg.out.mkdir(parents=True, exist_ok=True)
    write_json(cfg.out / "kl.json", data)
    md = (
        f"# skv eval kl ({data['machine'].get('date', '')})\n\n"
        f"{cfg.prefix_tokens}-token dense prefix of `{cfg.book}`, then {cfg.n_eval} tokens decoded teacher-forced "
        "under each policy; KL(full || policy) of the next-token distributions.\n\n"
        + markdown_table(HEADERS, _table_rows(data["rows"]))
        + "\n"
    )
    write_text(cfg.out / "kl.md", md)
    return 0
