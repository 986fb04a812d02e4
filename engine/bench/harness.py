"""What the benchmarks share: book text, the candidate policies, context-size options, the decode timing loop, the
plots and tables of ms/token, and the error for bad options (the CLI turns it into exit code 2)."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.bench import report
from engine.params import SkvParams

Log = Callable[[str], None]


class OptionError(ValueError):
    """Bad benchmark options or inputs (one sentence; `skv` exits with 2)."""


@dataclass(frozen=True, slots=True)
class Candidate:
    label: str
    params: SkvParams

    def to_json(self) -> dict:
        p = self.params
        return {
            "label": self.label,
            "policy": p.policy.name.lower(),
            "budget": p.budget,
            "sink": p.sink,
            "ring": p.ring,
        }


def load_book_text(book: str) -> str:
    path = Path(book)
    if not path.exists():
        path = report.books_dir() / book
    if not path.exists():
        raise FileNotFoundError(f"book {book!r} not found (looked in {report.books_dir()})")
    text = path.read_text(encoding="utf-8", errors="replace")
    # skip the Gutenberg header when present
    start = text.find("*** START OF")
    if start >= 0:
        text = text[text.find("\n", start) + 1 :]
    return text


def prefill_interleaved(sessions: list, plan, docs: list) -> list[float]:
    """Prefill one plan into each session, chunk by chunk, alternating which goes first; the seconds each spent
    (baseline and candidate measured in one run, under the same load)."""
    prefills = [s.begin_prefill(plan.tokens, plan.spans, docs) for s in sessions]
    spent = [0.0] * len(sessions)
    ci = 0
    while not prefills[0].done:
        order = range(len(sessions)) if ci % 2 == 0 else reversed(range(len(sessions)))
        for k in order:
            t0 = time.perf_counter()
            prefills[k].step()
            spent[k] += time.perf_counter() - t0
        ci += 1
    return spent


def int_list(s: str) -> tuple[int, ...]:
    out = []
    for part in s.split(","):
        part = part.strip().lower()
        if not part:
            continue
        mult = 1024 if part.endswith("k") else 1
        try:
            n = int(float(part.removesuffix("k")) * mult)
        except ValueError:
            raise OptionError(
                f"{part!r} is not a token count: write numbers, k for 1024 (4k = 4096), separated by commas"
            ) from None
        if n <= 0:
            raise OptionError(f"{part!r}: token counts must be positive")
        out.append(n)
    if not out:
        raise OptionError(f"empty list: {s!r}")
    return tuple(out)


def run_options(args: argparse.Namespace, default: tuple[int, ...], full: tuple[int, ...]) -> tuple[int, ...]:
    """Checks --threads/--steps/--repeats; the sorted contexts (--contexts, else the --full or default grid)."""
    if args.threads < 1 or args.steps < 1 or args.repeats < 1:
        raise ValueError("--threads, --steps and --repeats must be at least 1")
    contexts = int_list(args.contexts) if args.contexts else (full if args.full else default)
    if min(contexts) < 64:
        raise ValueError("contexts must be at least 64 tokens")
    return tuple(sorted(contexts))


def ctx_label(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def decode_run(session, n_doc: int, cont: list[int], on_step=None) -> list[float]:
    """Rewind to the prefill, then time each teacher-forced single-token decode (ms); `on_step()` runs after each
    step, outside the timing."""
    session.rewind(n_doc)
    out = []
    for t in cont:
        t0 = time.perf_counter()
        session.llm.eval([t])
        out.append((time.perf_counter() - t0) * 1e3)
        if on_step is not None:
            on_step()
    return out


def policy_table(results: list[dict]) -> tuple[list[str], list[list[Any]]]:
    labels = list(results[0]["ms_per_token"].keys())
    headers = ["ctx", *[f"{k} ms/tok" for k in labels]]
    rows = [[ctx_label(r["context"]), *[r["ms_per_token"][k] for k in labels]] for r in results]
    return headers, rows


def decode_plot(path: Path, title: str, results: list[dict]) -> Path | None:
    """ms/token of every candidate against context (None without matplotlib)."""
    labels = list(results[0]["ms_per_token"])
    return report.line_plot(
        path,
        title,
        "context tokens",
        "ms / token",
        [r["context"] for r in results],
        {k: [r["ms_per_token"][k] for r in results] for k in labels},
    )
