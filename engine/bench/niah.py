"""`skv eval niah`: RULER-style needle-in-a-haystack tasks in natural text (RULER, Hsieh et al. 2024), generated from the task
definitions, the question decoded under each policy.

Haystack: a book from resources/books, cut to the length; needles are inserted between sentences at
seeded random depths. Tasks (RULER's templates, numbers of needles as in its defaults for small models):
- `single`: one needle "One of the special magic numbers for {key} is: {value}."; the question asks for it.
- `multikey`: four needles with different keys; the question asks for one of them (the others distract).
- `multivalue`: four needles with the same key and different values; the question asks for all of them.
- `vt` (variable tracking): "VAR X1 = {value}." then "VAR X2 = X1." ... (one chain of 4 hops) spread through the
  text; the question asks for every variable holding the value.
Score per cell: the fraction of the expected values (or variable names) in the answer; `single` and `multikey`
are 0 or 1. For the SKV policies the JSON also records which fraction of the needles' sentences the policy selected
at the first answer step (retrieval recall), so a miss can be told apart from a model that did not copy.

Each (task, length, trial) is prefilled once; each policy starts from a snapshot of that prefill
(`Session.restore`), decodes the question and the answer prefix under the policy, then greedy tokens.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine import params as defaults
from engine.bench import report
from engine.bench.harness import OptionError, ctx_label, int_list, load_book_text
from engine.params import DEFAULT_PARAMS, Policy, SkvParams

TASKS = ("single", "multikey", "multivalue", "vt")
DEFAULT_LENGTHS = (4096, 8192)
FULL_LENGTHS = (4096, 8192, 16384, 28672)
WORDS = (
    "amber",
    "brisk",
    "cobalt",
    "dusty",
    "eager",
    "fabled",
    "gentle",
    "hollow",
    "ivory",
    "jolly",
    "keen",
    "lunar",
    "mellow",
    "nimble",
    "opal",
    "proud",
    "quiet",
    "rustic",
    "silver",
    "tidal",
    "umber",
    "vivid",
)
NOUNS = (
    "anchor",
    "badger",
    "candle",
    "dolphin",
    "ember",
    "falcon",
    "garden",
    "harbor",
    "island",
    "jacket",
    "kettle",
    "lantern",
    "meadow",
    "needle",
    "orchard",
    "pepper",
    "quarry",
    "raven",
    "saddle",
    "thistle",
)
NEEDLE = "One of the special magic numbers for {key} is: {value}."

Log = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Task:
    name: str
    needles: list[str]  # sentences to insert, in order
    question: str
    answer_prefix: str
    expected: list[str]  # strings the answer must contain
    max_tokens: int


def make_task(name: str, rng: np.random.Generator) -> Task:
    def key() -> str:
        return f"{rng.choice(WORDS)}-{rng.choice(NOUNS)}"

    def value() -> str:
        return str(int(rng.integers(1_000_000, 10_000_000)))

    if name in ("single", "multikey"):
        keys = [key() for _ in range(1 if name == "single" else 4)]
        while len(set(keys)) < len(keys):
            keys = [key() for _ in keys]
        values = [value() for _ in keys]
        ask = int(rng.integers(len(keys)))
        return Task(
            name,
            [NEEDLE.format(key=k, value=v) for k, v in zip(keys, values, strict=True)],
            f"What is the special magic number for {keys[ask]} mentioned in the provided text?",
            f"The special magic number for {keys[ask]} mentioned in the provided text is",
            [values[ask]],
            12,
        )
    if name == "multivalue":
        k = key()
        values = [value() for _ in range(4)]
        return Task(
            name,
            [NEEDLE.format(key=k, value=v) for v in values],
            f"What are all the special magic numbers for {k} mentioned in the provided text?",
            f"The special magic numbers for {k} mentioned in the provided text are",
            values,
            40,
        )
    if name == "vt":
        v = str(int(rng.integers(10000, 100000)))
        names = [f"X{int(x)}" for x in rng.choice(np.arange(10, 99), size=5, replace=False)]
        needles = [f"VAR {names[0]} = {v}."] + [f"VAR {names[i]} = {names[i - 1]}." for i in range(1, 5)]
        return Task(
            name,
            needles,
            f"Find all variables that are assigned the value {v} in the text above.",
            f"According to the chain of variable assignments in the text above, 5 variables are assigned "
            f"the value {v}, they are:",
            names,
            30,
        )
    raise ValueError(f"unknown task {name!r} (tasks: {', '.join(TASKS)})")


def score(task: Task, answer: str) -> float:
    if task.name == "vt":
        found = set(re.findall(r"X\d+", answer))
        return sum(n in found for n in task.expected) / len(task.expected)
    return sum(v in answer for v in task.expected) / len(task.expected)


def insert_needles(
    text: str, needles: list[str], rng: np.random.Generator
) -> tuple[str, list[tuple[int, int]]]:
    """Insert each needle after a sentence end at a random depth (in order: a chain keeps its order)."""
    ends = [m.end() for m in re.finditer(r"[.!?][\"')\]]?\s+(?=[A-Z\"'])", text)]
    if len(ends) < len(needles) + 1:
        raise ValueError("the haystack text has too few sentences for the needles")
    picks = sorted(rng.choice(len(ends), size=len(needles), replace=False))
    out, spans, last = [], [], 0
    shift = 0
    for pos_i, needle in zip(picks, needles, strict=True):
        at = ends[pos_i]
        out.append(text[last:at])
        start = at + shift
        out.append(needle + " ")
        spans.append((start, start + len(needle)))
        shift += len(needle) + 1
        last = at
    out.append(text[last:])
    return "".join(out), spans


@dataclass(slots=True)
class NiahConfig:
    model: str
    tasks: tuple[str, ...] = TASKS
    lengths: tuple[int, ...] = DEFAULT_LENGTHS
    policies: tuple[str, ...] = ("full", "sentence", "chunk", "window")
    budget: int = DEFAULT_PARAMS.budget
    sink: int = DEFAULT_PARAMS.sink
    ring: int = DEFAULT_PARAMS.ring
    threads: int = 2
    trials: int = 1
    seed: int = 0
    book: str = "frankenstein.txt"
    text: str = ""
    out: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def candidates(self) -> list[tuple[str, SkvParams]]:
        return [
            (
                f"{Policy.parse(p).name.lower()}/{self.budget}",
                SkvParams(Policy.parse(p), self.budget, self.sink, self.ring),
            )
            for p in self.policies
        ]


def _cut_text(session, text: str, n_tokens: int) -> str:
    """A piece of the book of about n_tokens tokens, cut at a paragraph."""
    chars = int(n_tokens * 4.2)
    piece = text[:chars]
    while len(session.tokenize(piece)) > n_tokens and chars > 200:
        chars = int(chars * 0.95)
        piece = text[:chars]
    cut = piece.rfind("\n\n")
    return piece[:cut] if cut > len(piece) // 2 else piece


def run_niah(cfg: NiahConfig, log: Log = print) -> dict:
    from engine.session import Session, SessionConfig

    text = cfg.text or load_book_text(cfg.book)
    info = report.machine_info()
    n_ctx = -(-(max(cfg.lengths) + 256 + 64) // 256) * 256
    first = next(
        (p for _, p in cfg.candidates() if p.policy != Policy.FULL),
        SkvParams(Policy.SENTENCE, cfg.budget, cfg.sink, cfg.ring),
    )
    session = Session(SessionConfig(cfg.model, n_ctx=n_ctx, n_threads=cfg.threads, skv=first, seed=cfg.seed))
    rng = np.random.default_rng(cfg.seed)
    cells: list[dict] = []
    t0 = time.perf_counter()
    try:
        for length in cfg.lengths:
            base = _cut_text(session, text, length - 200)
            for name in cfg.tasks:
                for trial in range(cfg.trials):
                    task = make_task(name, rng)
                    hay, spans = insert_needles(base, task.needles, rng)
                    cell = {"length": length, "trial": trial, "needle_chars": spans}
                    cell.update(run_cell(session, cfg, task, hay, spans))
                    cells.append(cell)
                    log(
                        f"[{ctx_label(length)} {name}] "
                        + ", ".join(f"{k}: {v['score']:.2f}" for k, v in cell["policies"].items())
                    )
                    if cfg.out is not None:
                        _write(cfg, info, cells, time.perf_counter() - t0, partial=True)
    finally:
        session.close()
    info["uptime_end"] = report.uptime()
    return _write(cfg, info, cells, time.perf_counter() - t0, partial=False)


def run_cell(session, cfg: NiahConfig, task: Task, text: str, spans: list[tuple[int, int]]) -> dict:
    """Prefill the haystack once, then answer under each policy from a snapshot of it; the needles' character
    spans give the sentences whose selection is the retrieval recall."""
    from engine.documents import Document

    first = cfg.candidates()[0][1]
    session.set_params(SkvParams(Policy.FULL, first.budget, first.sink, first.ring))
    t0 = time.perf_counter()
    session.load_documents([Document.from_text(cfg.book, text)], reserve=256)
    prefill_s = time.perf_counter() - t0
    snap = session.snapshot()
    needle_ids = {
        i
        for i, sp in enumerate(session.spans)
        if sp.doc == 0 and any(sp.char_start < b and a < sp.char_end for a, b in spans)
    }
    out: dict[str, Any] = {
        "task": task.name,
        "tokens": session.n_doc_tokens,
        "prefill_s": prefill_s,
        "expected": task.expected,
        "needle_sentences": sorted(needle_ids),
        "policies": {},
    }
    for label, params in cfg.candidates():
        session.restore(snap)
        session.set_params(params)
        r = session.ask(task.question, answer_prefix=task.answer_prefix, max_tokens=task.max_tokens)
        res: dict[str, Any] = {"answer": r.answer.strip(), "score": score(task, r.answer)}
        if r.steps and needle_ids:
            picked = {sid for sid, _ in r.steps[0].counts}
            res["needle_recall_first"] = len(needle_ids & picked) / len(needle_ids)
            res["needle_recall_any"] = len(
                needle_ids & {sid for st in r.steps for sid, _ in st.counts}
            ) / len(needle_ids)
        out["policies"][label] = res
    return out


def summary(
    cells: list[dict], lengths: tuple[int, ...], tasks: tuple[str, ...]
) -> tuple[list[str], list[list]]:
    labels = list(cells[0]["policies"]) if cells else []
    headers = ["task", "length", *labels, *[f"{k} recall" for k in labels if not k.startswith("full")]]
    rows = []
    for name in tasks:
        for L in lengths:
            cs = [c for c in cells if c["task"] == name and c["length"] == L]
            if not cs:
                continue
            row: list[Any] = [name, ctx_label(L)]
            row += [sum(c["policies"][k]["score"] for c in cs) / len(cs) for k in labels]
            for k in labels:
                if k.startswith("full"):
                    continue
                rec = [c["policies"][k].get("needle_recall_first") for c in cs]
                rec = [x for x in rec if x is not None]
                row.append(sum(rec) / len(rec) if rec else "-")
            rows.append(row)
    return headers, rows


def _write(cfg: NiahConfig, info: dict, cells: list[dict], wall: float, partial: bool) -> dict:
    labels = [k for k, _ in cfg.candidates()]
    means = {
        k: (sum(c["policies"][k]["score"] for c in cells) / len(cells) if cells else None) for k in labels
    }
    data = {
        "benchmark": "niah",
        "partial": partial,
        "config": {
            "model": cfg.model,
            "tasks": list(cfg.tasks),
            "lengths": list(cfg.lengths),
            "policies": labels,
            "budget": cfg.budget,
            "sink": cfg.sink,
            "ring": cfg.ring,
            "threads": cfg.threads,
            "trials": cfg.trials,
            "seed": cfg.seed,
            "book": cfg.book,
            **cfg.extra,
        },
        "machine": info,
        "wall_s": wall,
        "mean_score": means,
        "cells": cells,
    }
    if cfg.out is not None:
        out = Path(cfg.out)
        report.write_json(out / "niah.json", data)
        report.write_text(out / "niah.md", render_markdown(data))
    return data


def render_markdown(data: dict) -> str:
    c, mi = data["config"], data["machine"]
    lines = [
        f"# skv eval niah ({mi['date']})",
        "",
        f"Model `{Path(c['model']).name}`, book `{c['book']}`, budget {c['budget']} (sink {c['sink']}, ring "
        f"{c['ring']}), {c['trials']} trial(s) per cell, seed {c['seed']}. Scores: fraction of the expected "
        "values (variables for vt) in the answer; recall: fraction of the needles' sentences the policy "
        "selected at the first answer step.",
        "",
    ]
    if data["cells"]:
        h, rows = summary(data["cells"], tuple(c["lengths"]), tuple(c["tasks"]))
        lines += [report.markdown_table(h, rows), ""]
        lines += ["Mean score: " + ", ".join(f"{k} {v:.2f}" for k, v in data["mean_score"].items()), ""]
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="GGUF model file (default: the built-in Qwen2.5-Coder-0.5B-Instruct)")
    p.add_argument("--tasks", default=",".join(TASKS), help=f"tasks (default {','.join(TASKS)})")
    p.add_argument("--lengths", help="haystack lengths (default 4k,8k; --full: 4k,8k,16k,28k)")
    p.add_argument("--full", action="store_true", help="the full grid of lengths, 3 trials")
    p.add_argument("--policies", default="full,sentence,chunk,window")
    p.add_argument("--budget", type=int, default=DEFAULT_PARAMS.budget)
    p.add_argument("--sink", type=int, default=DEFAULT_PARAMS.sink)
    p.add_argument("--ring", type=int, default=DEFAULT_PARAMS.ring)
    p.add_argument("--threads", type=int, default=defaults.N_THREADS)
    p.add_argument("--trials", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--book", default="frankenstein.txt", help="haystack book (resources/books or a path)")
    p.add_argument("--out", default="bench-results/niah", help="output folder (default bench-results/niah)")


def main_niah(args: argparse.Namespace) -> int:
    from engine.models import resolve_model

    try:
        tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
        for t in tasks:
            if t not in TASKS:
                raise ValueError(f"unknown task {t!r} (tasks: {', '.join(TASKS)})")
        lengths = int_list(args.lengths) if args.lengths else (FULL_LENGTHS if args.full else DEFAULT_LENGTHS)
        if min(lengths) < 1024:
            raise ValueError("lengths must be at least 1k tokens")
        if args.trials < 1:
            raise ValueError("--trials must be at least 1")
        cfg = NiahConfig(
            model=str(resolve_model(args.model or "")),
            tasks=tasks,
            lengths=tuple(sorted(lengths)),
            policies=tuple(p.strip() for p in args.policies.split(",") if p.strip()),
            budget=args.budget,
            sink=args.sink,
            ring=args.ring,
            threads=args.threads,
            trials=3 if args.full and args.trials == 1 else args.trials,
            seed=args.seed,
            book=args.book,
            out=Path(args.out),
        )
        cfg.candidates()
        cfg.text = load_book_text(cfg.book)
    except (ValueError, FileNotFoundError) as e:
        raise OptionError(str(e)) from None
    data = run_niah(cfg, log=lambda s: print(s, file=sys.stderr, flush=True))
    h, rows = summary(data["cells"], cfg.lengths, cfg.tasks)
    print(report.text_table(h, rows))
    print("mean score: " + ", ".join(f"{k} {v:.2f}" for k, v in data["mean_score"].items()))
    print(f"wrote {cfg.out}/niah.json, niah.md")
    return 0
