"""`skv eval qa`: detail questions over real books, answered from a window of the book under each policy.

The questions (resources/eval/qa_questions.json) ask for obscure concrete details of the public-domain books in the
public-domain books of resources/books (a number, a minor name, an object, a colour), each stated in one or two sentences of the book:
`source` is that text verbatim and `char_offset` its place in the book as `load_book_text` reads it. A small model
cannot answer them from memory, so an answer is right only when the model used the passage.

For each context size, the questions of a book are packed into windows of the book of about that many tokens
(room left for the question and the answer): each question's source lies inside its window, centred where possible,
and several questions whose sources fit together share one window. A window is prefilled once as a Document
(`Session.load_documents`) and snapshotted; each question, under each policy and budget, starts from the restored
snapshot, decodes the question under the policy and up to --max-tokens greedy answer tokens (`Session.ask`).

Scores per answer:
- `correct`: every slot of `expected` (a list of alternatives) has an alternative in the answer, case-insensitive,
  at a word start (and, for numbers, not followed by more of the number: "ten" does not match "often" or "tenth",
  "20" not "200").
- `source_retrieved` (SKV policies; null for full): whether a sentence overlapping the source was selected at any
  answer step of `AskResult.steps` (the steps after each answer token; the selection behind the first answer token,
  made while decoding the prompt's last token, is not among them).
Summary per context x policy/budget: accuracy, retrieval recall, and `kept_of_full` = (questions both full and the
policy answered right) / (questions full answered right). `window` (sink + ring only) cannot see the source: the
questions it answers right anyway are the memory check (model knowledge or a lucky guess, not retrieval).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine import params as defaults
from engine.bench import protocol, report
from engine.bench.harness import OptionError, ctx_label, int_list, load_book_text
from engine.params import DEFAULT_PARAMS, Policy, SkvParams

DEFAULT_QUESTIONS = Path(__file__).resolve().parents[2] / "resources" / "eval" / "qa_questions.json"
DEFAULT_CONTEXTS = (8192,)
DEFAULT_POLICIES = ("full", "sentence", "chunk", "window")
DEFAULT_STOP = ("\nQuestion:",)  # a base model goes on with an invented question: not part of the answer
_SENT_END = re.compile(r"[.!?][\"'”’)\]]*\s+")
STORE_MAX_BYTES = 16 << 30  # --store: a whole grid's windows (21 at 8k: ~2.3 GB) stay
EDGE = 0.15  # each side of a window kept free of sources where the book allows (fraction of the window)

NUMBER_WORDS = frozenset(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand million "
    "first second third fourth fifth sixth seventh eighth ninth tenth dozen".split()
)

# options forwarded as they are: SessionConfig fields (--session-opt) and SkvParams fields (--skv-opt) that the
# harness does not set itself. New fields of either (e.g. a question-attention switch) need no change here.
_OWN_SESSION_FIELDS = frozenset({"model_path", "n_ctx", "n_threads", "skv", "seed"})
_OWN_SKV_FIELDS = frozenset({"policy", "budget", "sink", "ring"})

Log = Callable[[str], None]


# ----------------------------------------------------------------- questions


@dataclass(frozen=True, slots=True)
class Question:
    id: str
    book: str
    question: str
    answer_prefix: str
    expected: tuple[tuple[str, ...], ...]  # slots; each slot: alternatives, any one of which satisfies it
    source: str  # the sentence(s) holding the answer, verbatim
    char_offset: int  # load_book_text(book).index(source)

    @property
    def char_end(self) -> int:
        return self.char_offset + len(self.source)


def parse_questions(data: Any) -> list[Question]:
    """Questions from the file's JSON; ValueError names the first problem."""
    if not isinstance(data, dict) or not isinstance(data.get("questions"), list):
        raise ValueError('the question file must be an object with a "questions" list')
    if data.get("version") != 1:
        raise ValueError(f"unsupported question file version {data.get('version')!r} (expected 1)")
    out: list[Question] = []
    seen: set[str] = set()
    for i, q in enumerate(data["questions"]):
        where = f"question {i} ({q.get('id', '?') if isinstance(q, dict) else '?'})"
        if not isinstance(q, dict):
            raise ValueError(f"{where}: not an object")
        for key in ("id", "book", "question", "source"):
            if not isinstance(q.get(key), str) or not q[key]:
                raise ValueError(f"{where}: {key!r} must be a non-empty string")
        if not isinstance(q.get("answer_prefix", ""), str):
            raise ValueError(f"{where}: 'answer_prefix' must be a string")
        off = q.get("char_offset")
        if not isinstance(off, int) or isinstance(off, bool) or off < 0:
            raise ValueError(f"{where}: 'char_offset' must be a non-negative integer")
        exp = q.get("expected")
        if not (
            isinstance(exp, list)
            and exp
            and all(
                isinstance(s, list) and s and all(isinstance(a, str) and a.strip() for a in s) for s in exp
            )
        ):
            raise ValueError(f"{where}: 'expected' must be a non-empty list of non-empty lists of strings")
        if q["id"] in seen:
            raise ValueError(f"{where}: duplicate id {q['id']!r}")
        seen.add(q["id"])
        out.append(
            Question(
                q["id"],
                q["book"],
                q["question"],
                q.get("answer_prefix", ""),
                tuple(tuple(s) for s in exp),
                q["source"],
                off,
            )
        )
    return out


def load_questions(path: str | Path | None = None) -> list[Question]:
    p = Path(path) if path is not None else DEFAULT_QUESTIONS
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"question file {p} not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"question file {p} is not valid JSON ({e})") from None
    return parse_questions(data)


def body_end(text: str) -> int:
    """Where the book ends: the Gutenberg licence after '*** END OF' is never part of a window."""
    end = text.find("*** END OF")
    return end if end >= 0 else len(text)


def check_sources(questions: Iterable[Question], texts: dict[str, str]) -> list[str]:
    """Problems: a source not verbatim at its offset, or in the licence."""
    problems = []
    for q in questions:
        text = texts[q.book]
        if text[q.char_offset : q.char_end] != q.source:
            at = text.find(q.source)
            problems.append(
                f"{q.id}: source not at char_offset {q.char_offset}"
                + (f" (found at {at})" if at >= 0 else f" (not in {q.book})")
            )
        elif q.char_end > body_end(text):
            problems.append(f"{q.id}: source lies past the end of the book text")
    return problems


def select_questions(
    questions: list[Question], books: tuple[str, ...] = (), limit: int | None = None
) -> list[Question]:
    """Questions of the named books (file name with or without .txt), at most `limit` taken round-robin over the
    books (in file order within a book) so that a small limit still covers every book."""
    if books:
        want = {b.removesuffix(".txt") for b in books}
        questions = [q for q in questions if q.book.removesuffix(".txt") in want]
        missing = want - {q.book.removesuffix(".txt") for q in questions}
        if missing:
            raise ValueError(f"no questions for book(s) {', '.join(sorted(missing))}")
    if limit is None or limit >= len(questions):
        return list(questions)
    if limit < 1:
        raise ValueError("--limit must be at least 1")
    by_book: dict[str, list[Question]] = {}
    for q in questions:
        by_book.setdefault(q.book, []).append(q)
    out: list[Question] = []
    i = 0
    while len(out) < limit:
        for qs in by_book.values():
            if i < len(qs) and len(out) < limit:
                out.append(qs[i])
        i += 1
    keep = {q.id for q in out}
    return [q for q in questions if q.id in keep]


# ----------------------------------------------------------------- scoring


def _alt_pattern(alt: str) -> re.Pattern[str]:
    a = alt.strip().lower()
    right = ""
    if a[-1].isdigit():
        right = r"(?![0-9])"  # "20" not in "200"; "22" in "22d" / "22nd"
    elif a.split()[-1].split("-")[-1] in NUMBER_WORDS:
        right = r"(?![a-z])"  # "ten" not in "tenth"
    return re.compile(r"(?<![a-z0-9])" + re.escape(a) + right)


def slot_hits(expected: Iterable[Iterable[str]], answer: str) -> list[bool]:
    """For each slot, whether one of its alternatives occurs in the answer (case-insensitive, at a word start)."""
    low = answer.lower()
    return [any(_alt_pattern(a).search(low) for a in slot) for slot in expected]


def score_answer(expected: Iterable[Iterable[str]], answer: str) -> bool:
    """Correct: every slot satisfied."""
    hits = slot_hits(expected, answer)
    return bool(hits) and all(hits)


# ----------------------------------------------------------------- windows


@dataclass(frozen=True, slots=True)
class Window:
    book: str
    start: int  # characters of the book text, [start, end)
    end: int
    questions: tuple[Question, ...]
    n_tokens: int  # count_tokens(text[start:end])


def chars_per_token(text: str, count_tokens: Callable[[str], int], sample: int = 20000) -> float:
    """Characters per token of the book, from three samples (start, middle, end of the text)."""
    end = body_end(text)
    if end <= 3 * sample:
        parts = [text[:end]]
    else:
        parts = [text[i : i + sample] for i in (0, (end - sample) // 2, end - sample)]
    n_chars = sum(len(p) for p in parts)
    return n_chars / max(1, sum(count_tokens(p) for p in parts))


def _snap(text: str, s: int, e: int, lo: int, hi: int, limit: int) -> tuple[int, int]:
    """Move the window's ends inward to paragraph breaks, else to sentence ends, never across the sources
    [lo, hi)."""
    slack = max(200, (e - s) // 25)
    if s > 0:
        stop = min(s + slack, lo)
        p = text.find("\n\n", s, stop)
        if p < 0:
            m = _SENT_END.search(text, s, stop)
            p = m.end() if m else -1
        if p >= 0:
            s = p
        while s < lo and text[s].isspace():
            s += 1
    if e < limit:
        start = max(e - slack, hi)
        p = text.rfind("\n\n", start, e)
        if p < 0:
            ends = [m.start() + len(m.group().rstrip()) for m in _SENT_END.finditer(text, start, e)]
            p = ends[-1] if ends else -1
        if p >= 0:
            e = p
    return s, e


def _place(
    text: str,
    book: str,
    group: list[Question],
    chars: int,
    budget: int,
    count_tokens: Callable[[str], int],
    limit: int,
) -> list[Window]:
    lo, hi = group[0].char_offset, max(q.char_end for q in group)
    for _ in range(20):
        chars = min(chars, limit)
        if len(group) > 1 and hi - lo > chars * (1 - 2 * EDGE / 3):
            half = len(group) // 2  # shrunk below the group: split it
            return _place(text, book, group[:half], chars, budget, count_tokens, limit) + _place(
                text, book, group[half:], chars, budget, count_tokens, limit
            )
        mid = (lo + hi) // 2
        s = max(0, min(mid - chars // 2, limit - chars))
        e = min(limit, s + chars)
        s, e = _snap(text, s, e, lo, hi, limit)
        n = count_tokens(text[s:e])
        if n <= budget:
            assert s <= lo and hi <= e, (book, s, e, lo, hi)
            return [Window(book, s, e, tuple(group), n)]
        chars = int((e - s) * budget / n * 0.98)
        if chars < hi - lo:
            if len(group) > 1:
                continue  # split on the next round
            raise ValueError(f"{group[0].id}: its source does not fit in a window of {budget} tokens")
    raise RuntimeError(f"could not fit a window of {budget} tokens around {group[0].id} in {book}")


def build_windows(
    text: str,
    questions: Iterable[Question],
    budget: int,
    count_tokens: Callable[[str], int],
    cpt: float | None = None,
) -> list[Window]:
    """Windows of the book text of at most `budget` tokens (count_tokens) covering the questions of one book.

    Questions are taken in book order and packed while their sources fit in the middle of a window (EDGE of it
    free on each side); each window is centred on its sources (clamped to the book), its ends moved to paragraph
    breaks, and shrunk until it fits. Every question lands in exactly one window, its source inside it."""
    qs = sorted(questions, key=lambda q: q.char_offset)
    if not qs:
        return []
    books = {q.book for q in qs}
    if len(books) != 1:
        raise ValueError(f"build_windows takes the questions of one book, got {sorted(books)}")
    book = qs[0].book
    limit = body_end(text)
    for q in qs:
        if text[q.char_offset : q.char_end] != q.source or q.char_end > limit:
            raise ValueError(f"{q.id}: source not at its char_offset in {book}")
    if budget < 16:
        raise ValueError(f"a window of {budget} tokens is too small")
    chars = int(budget * (cpt if cpt is not None else chars_per_token(text, count_tokens)))
    span_max = chars * (1 - 2 * EDGE)
    groups: list[list[Question]] = []
    cur: list[Question] = []
    for q in qs:
        if cur and max(max(c.char_end for c in cur), q.char_end) - cur[0].char_offset > span_max:
            groups.append(cur)
            cur = []
        cur.append(q)
    groups.append(cur)
    out: list[Window] = []
    for g in groups:
        out += _place(text, book, g, chars, budget, count_tokens, limit)
    return out


# ----------------------------------------------------------------- config


@dataclass(slots=True)
class QaConfig:
    model: str
    questions: list[Question] | None = None  # None: loaded from questions_path
    questions_path: Path = DEFAULT_QUESTIONS
    contexts: tuple[int, ...] = DEFAULT_CONTEXTS
    policies: tuple[str, ...] = DEFAULT_POLICIES
    budgets: tuple[int, ...] = (1024,)
    sink: int = DEFAULT_PARAMS.sink
    ring: int = DEFAULT_PARAMS.ring
    max_tokens: int = 32
    limit: int | None = None  # questions per context
    books: tuple[str, ...] = ()
    threads: int = 2
    seed: int = 0
    stop: tuple[str, ...] = DEFAULT_STOP
    texts: dict[str, str] = field(default_factory=dict)  # book -> text (default: load_book_text(book))
    # the one place where extra options reach the engine: SessionConfig fields (n_gpu_layers, n_batch,
    # prompt_format, ...) and SkvParams fields (min_query_tokens, max_sentence_len, ...)
    session_options: dict[str, Any] = field(default_factory=dict)
    skv_options: dict[str, Any] = field(default_factory=dict)
    out: Path | None = None
    # the paper's protocol options (Session.ask): every SKV candidate also runs with each non-default value given
    question_attention: tuple[str, ...] = ("policy",)
    sentence_start: tuple[str, ...] = ("keep",)
    # named candidates beside the policies (--variant LABEL=key:value,...): SkvParams over sentence at the first
    # budget; a label with +qdense / +sdense takes that protocol option
    variants: tuple[tuple[str, dict[str, Any]], ...] = ()
    # --trace: each candidate is also decoded along full's answer (teacher forced): per answer token, the
    # log-probability it gives full's token, whether it would pick it, and how many selections hold the source
    trace: tuple[str, ...] = ()  # candidate labels, or ("all",)
    # --store: each window's dense prefill saved to (and, on the next run, restored from) this folder, so that a
    # later run of other candidates on the same windows skips the prefills (Session.load_documents' store)
    store: Path | None = None

    def params(self, policy: Policy, budget: int) -> SkvParams:
        return SkvParams(policy, budget, self.sink, self.ring, **self.skv_options)

    def candidates(self) -> list[tuple[str, SkvParams]]:
        """(label, params): `full` once, every other policy at every budget."""
        out = []
        for name in self.policies:
            pol = Policy.parse(name)
            if pol == Policy.FULL:
                out.append(("full", self.params(pol, max(self.budgets))))
            else:
                for b in self.budgets:
                    label = f"{pol.name.lower()}/{b}"
                    labels = (
                        protocol.variants(label, self.question_attention, self.sentence_start)
                        if pol == Policy.SENTENCE
                        else [label]
                    )
                    out += [(k, self.params(pol, b)) for k in labels]
        for label, opts in self.variants:
            out.append((label, dataclasses.replace(self.params(Policy.SENTENCE, self.budgets[0]), **opts)))
        labels = [k for k, _ in out]
        if len(set(labels)) != len(labels):
            raise ValueError(f"a policy is named twice: {', '.join(self.policies)}")
        return out

    def session_config(self, n_ctx: int):
        from engine.session import SessionConfig

        first = next(
            (p for _, p in self.candidates() if p.policy != Policy.FULL),
            self.params(Policy.SENTENCE, max(self.budgets)),
        )
        first = dataclasses.replace(first, budget=max(self.budgets))
        return SessionConfig(
            self.model, n_ctx=n_ctx, n_threads=self.threads, skv=first, seed=self.seed, **self.session_options
        )

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "questions": str(self.questions_path) if self.questions is None else "given",
            "contexts": list(self.contexts),
            "candidates": [k for k, _ in self.candidates()],
            "budgets": list(self.budgets),
            "sink": self.sink,
            "ring": self.ring,
            "max_tokens": self.max_tokens,
            "limit": self.limit,
            "books": list(self.books),
            "threads": self.threads,
            "seed": self.seed,
            "stop": list(self.stop),
            "session_options": dict(self.session_options),
            "skv_options": dict(self.skv_options),
            "variants": {
                k: {f: (v.name.lower() if hasattr(v, "name") else v) for f, v in o.items()}
                for k, o in self.variants
            },
            "trace": list(self.trace),
        }


def parse_variant(item: str) -> tuple[str, dict[str, Any]]:
    """`LABEL=key:value,key:value` -> (label, SkvParams fields): enum fields by name (gqa:heads, oracle:tokens),
    numbers as numbers. ValueError names what is wrong."""
    label, sep, body = item.partition("=")
    label = label.strip()
    if not sep or not label:
        raise ValueError(f"a variant is LABEL=key:value,..., got {item!r}")
    fields = {f.name: f for f in dataclasses.fields(SkvParams)}
    opts: dict[str, Any] = {}
    for part in (x.strip() for x in body.split(",") if x.strip()):
        key, sep, raw = part.partition(":")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            raise ValueError(
                f"variant {label!r}: unknown option {part!r} (known: {', '.join(sorted(fields))})"
            )
        default = fields[key].default
        raw = raw.strip()
        try:
            opts[key] = type(default).parse(raw) if hasattr(type(default), "parse") else int(raw)
        except ValueError as e:
            raise ValueError(f"variant {label!r}: {key}: {e}") from None
    try:
        SkvParams(**{**dataclasses.asdict(DEFAULT_PARAMS), **opts})
    except (ValueError, TypeError) as e:
        raise ValueError(f"variant {label!r}: {e}") from None
    return label, opts


def parse_options(items: Iterable[str], target: type, own: frozenset[str], what: str) -> dict[str, Any]:
    """KEY=VALUE strings -> fields of the dataclass `target` (typed like their defaults)."""
    fields = {f.name: f for f in dataclasses.fields(target)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"{what} options are KEY=VALUE, got {item!r}")
        if key not in fields:
            raise ValueError(f"unknown {what} option {key!r} (known: {', '.join(sorted(set(fields) - own))})")
        if key in own:
            raise ValueError(f"{what} option {key!r} is set by its own flag")
        f = fields[key]
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        )
        raw = raw.strip()
        try:
            if isinstance(default, bool):
                if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError
                value: Any = raw.lower() in ("1", "true", "yes", "on")
            elif isinstance(default, int):
                value = int(raw)
            elif isinstance(default, float):
                value = float(raw)
            else:
                value = raw
        except ValueError:
            raise ValueError(f"{what} option {key}: bad value {raw!r}") from None
        out[key] = value
    return out


# ----------------------------------------------------------------- running


def run_qa(cfg: QaConfig, log: Log = print) -> dict:
    from engine.documents import Document
    from engine.sentences import tokenize_sentences
    from engine.session import Session

    questions = cfg.questions if cfg.questions is not None else load_questions(cfg.questions_path)
    questions = select_questions(questions, cfg.books, cfg.limit)
    if not questions:
        raise ValueError("no questions to ask")
    books = list(dict.fromkeys(q.book for q in questions))
    texts = {b: cfg.texts[b] if b in cfg.texts else load_book_text(b) for b in books}
    problems = check_sources(questions, texts)
    if problems:
        raise ValueError("question sources do not match the books: " + "; ".join(problems[:5]))
    cands = cfg.candidates()
    info = report.machine_info()
    n_ctx = max(cfg.contexts)
    session = Session(cfg.session_config(n_ctx))
    results: list[dict] = []
    windows: list[dict] = []
    t0 = time.perf_counter()
    try:
        max_len = session.config.skv.max_sentence_len if session.config.skv else defaults.MAX_SENTENCE_LEN

        def count_tokens(s: str) -> int:  # document tokens as Session.plan counts them
            return len(tokenize_sentences(s, session.tokenize, max_tokens=max_len)[0])

        overhead = max(len(session.plan([Document.from_text(b, "")], 0).tokens) for b in books) + 4
        prompt_reserve = (
            max(len(session.prompt_tokens(q.question, q.answer_prefix)) for q in questions)
            + cfg.max_tokens
            + 8
        )
        cpt = {b: chars_per_token(texts[b], count_tokens) for b in books}
        for ctx in cfg.contexts:
            doc_budget = ctx - overhead - prompt_reserve
            if doc_budget < 64:
                raise ValueError(
                    f"a context of {ctx} tokens leaves no room for the book after the question "
                    f"and {cfg.max_tokens} answer tokens ({prompt_reserve} tokens)"
                )
            reserve = n_ctx - ctx + prompt_reserve
            for book in books:
                wins = build_windows(
                    texts[book],
                    [q for q in questions if q.book == book],
                    doc_budget,
                    count_tokens,
                    cpt=cpt[book],
                )
                for wi, w in enumerate(wins):
                    win, rows = run_window(session, cfg, cands, ctx, w, texts[book], reserve, wi)
                    windows.append(win)
                    results += rows
                    log(
                        f"[{ctx_label(ctx)} {book} window {wi + 1}/{len(wins)}: {win['tokens']} tokens, "
                        f"prefill {win['prefill_s']:.1f} s]"
                    )
                    for r in rows:
                        log(
                            f"  {r['id']}: "
                            + ", ".join(
                                f"{k} {'OK' if v['correct'] else 'x'} {v['answer'][:30]!r}"
                                for k, v in r["policies"].items()
                            )
                        )
                    if cfg.out is not None:
                        _write(cfg, info, windows, results, time.perf_counter() - t0, partial=True)
    finally:
        session.close()
    info["uptime_end"] = report.uptime()
    return _write(cfg, info, windows, results, time.perf_counter() - t0, partial=False)


def run_window(
    session,
    cfg: QaConfig,
    cands: list[tuple[str, SkvParams]],
    ctx: int,
    w: Window,
    text: str,
    reserve: int,
    index: int,
) -> tuple[dict, list[dict]]:
    """Prefill one window, then ask each of its questions under each candidate from a snapshot of the prefill."""
    from engine.documents import Document

    doc = Document.from_text(w.book, text[w.start : w.end])
    session.set_params(cfg.params(Policy.FULL, max(cfg.budgets)))
    t0 = time.perf_counter()
    store = None
    if cfg.store is not None:
        from engine.session_store import SessionStore

        store = SessionStore(cfg.store, max_bytes=STORE_MAX_BYTES)
    rep = session.load_documents([doc], reserve=reserve, store=store)
    prefill_s = time.perf_counter() - t0
    snap = session.snapshot()
    win = {
        "context": ctx,
        "book": w.book,
        "index": index,
        "chars": [w.start, w.end],
        "tokens": rep.n_tokens_loaded,
        "n_doc_tokens": session.n_doc_tokens,
        "truncated": rep.truncated,
        "prefill_s": prefill_s,
        "restored": rep.restored,
        "questions": [q.id for q in w.questions],
    }
    rows = []
    for q in w.questions:
        a, b = q.char_offset - w.start, q.char_end - w.start
        src = sorted(i for i in range(len(session.spans)) if _overlaps(session.span_of(i), a, b))
        src_set = set(src)
        row: dict[str, Any] = {
            "context": ctx,
            "id": q.id,
            "book": q.book,
            "window": index,
            "question": q.question,
            "expected": [list(s) for s in q.expected],
            "source_chars": [q.char_offset, q.char_end],
            "source_depth": round((a + b) / 2 / max(1, w.end - w.start), 3),
            "source_sentences": src,
        }
        if not src:  # cut off by the load (it should not be: the window was sized to fit)
            row["skipped"] = "source not loaded"
            rows.append(row)
            continue
        t_lo = min(session.spans[i].tok_start for i in src)
        t_hi = max(session.spans[i].tok_end for i in src)
        p = session.n_doc_tokens + len(session.prompt_tokens(q.question, q.answer_prefix))
        row["source_tokens"] = [t_lo, t_hi]
        row["source_tokens_before_question"] = session.n_doc_tokens - t_hi
        row["source_in_sink_or_ring"] = t_hi <= cfg.sink or t_lo >= p - cfg.ring
        row["policies"] = {}
        for label, params in cands:
            session.restore(snap)
            session.set_params(params)
            qa_mode, ss_mode = protocol.of(label)
            r = session.ask(
                q.question,
                answer_prefix=q.answer_prefix,
                max_tokens=cfg.max_tokens,
                stop=cfg.stop,
                question_attention=qa_mode,
                sentence_start=ss_mode,
            )
            answer = r.answer.strip()
            hits = slot_hits(q.expected, answer)
            res: dict[str, Any] = {
                "answer": answer,
                "correct": bool(hits) and all(hits),
                "slots": hits,
                "reason": r.reason,
                "n_tokens": len(r.tokens),
                "tokens": list(r.tokens),
            }
            if params.policy == Policy.FULL or not r.steps:
                res["source_retrieved"] = None
                res["source_weight"] = None
            else:
                res["source_retrieved"] = any(
                    _overlaps(session.span_of(sid), a, b) for st in r.steps for sid, _ in st.counts
                )
                total = sum(st.n_selections for st in r.steps)
                res["source_weight"] = (
                    sum(max((n for sid, n in st.counts if sid in src_set), default=0) for st in r.steps)
                    / total
                    if total
                    else None
                )
            row["policies"][label] = res
        full_res = row["policies"].get("full")
        if cfg.trace and full_res is not None and full_res["n_tokens"] > 0:
            forced = full_res["tokens"]
            for label, params in cands:
                if params.policy == Policy.FULL or (label not in cfg.trace and "all" not in cfg.trace):
                    continue
                session.restore(snap)
                session.set_params(params)
                qa_mode, ss_mode = protocol.of(label)
                row["policies"][label]["trace"] = trace_answer(
                    session, q, forced, cfg, qa_mode, ss_mode, src_set
                )
        rows.append(row)
    return win, rows


def trace_answer(
    session, q: Question, forced: list[int], cfg: QaConfig, qa_mode: str, ss_mode: str, src_set: set[int]
) -> dict:
    """Decode `forced` (full's answer) under the session's policy: per answer token i, the log-probability the
    policy gives full's token, whether it is the policy's own pick, and in how many of the step's selections the
    source sentence is (the selection made while decoding token i-1, which produced the logits of token i: the
    prompt's last step for i = 0)."""
    logp: list[float] = []
    top: list[bool] = []

    def sampler(logits: np.ndarray) -> int:
        i = len(logp)
        z = logits.astype(np.float64)
        m = float(z.max())
        lse = m + float(np.log(np.exp(z - m).sum()))
        logp.append(round(float(z[forced[i]]) - lse, 4))
        top.append(int(np.argmax(z)) == forced[i])
        return forced[i]

    r = session.ask(
        q.question,
        answer_prefix=q.answer_prefix,
        max_tokens=len(forced),
        stop=(),
        ignore_eos=True,
        sampler=sampler,
        question_attention=qa_mode,
        sentence_start=ss_mode,
    )
    sel = [r.first_step] + list(r.steps[: len(forced) - 1])
    src_in = [sum(n for sid, n in st.counts if sid in src_set) if st is not None else None for st in sel]
    n_sel = next((st.n_selections for st in sel if st is not None), 0)
    diverge = next((i for i, ok in enumerate(top) if not ok), None)
    return {
        "logp": logp,
        "top": top,
        "source_selections": src_in,
        "n_selections": n_sel,
        "first_divergence": diverge,
    }


def _overlaps(sp, a: int, b: int) -> bool:
    """A document sentence whose characters intersect [a, b)."""
    return sp is not None and sp.doc >= 0 and sp.char_start < b and a < sp.char_end


# ----------------------------------------------------------------- summary and output


def summarize(results: list[dict], labels: list[str], contexts: Iterable[int]) -> dict:
    rows = []
    memory = []
    full = "full" if "full" in labels else None
    for ctx in contexts:
        rs = [r for r in results if r["context"] == ctx and "policies" in r]
        if not rs:
            continue
        for k in labels:
            ok = [r for r in rs if r["policies"][k]["correct"]]
            rec = [
                r["policies"][k]["source_retrieved"]
                for r in rs
                if r["policies"][k]["source_retrieved"] is not None
            ]
            row: dict[str, Any] = {
                "context": ctx,
                "label": k,
                "n": len(rs),
                "correct": len(ok),
                "accuracy": len(ok) / len(rs),
                "retrieval_recall": sum(rec) / len(rec) if rec else None,
                "full_correct": None,
                "kept": None,
                "kept_of_full": None,
            }
            if full is not None:
                f_ok = [r for r in rs if r["policies"][full]["correct"]]
                kept = [r for r in f_ok if r["policies"][k]["correct"]]
                row.update(
                    full_correct=len(f_ok),
                    kept=len(kept),
                    kept_of_full=len(kept) / len(f_ok) if f_ok else None,
                )
            rows.append(row)
        for k in (k for k in labels if k.startswith("window/")):
            ok = [r for r in rs if r["policies"][k]["correct"]]
            outside = [r["id"] for r in ok if not r["source_in_sink_or_ring"]]
            memory.append(
                {
                    "context": ctx,
                    "label": k,
                    "n": len(rs),
                    "window_correct": len(ok),
                    "window_correct_outside_window": len(outside),
                    "ids": outside,
                }
            )
    skipped = [
        {"context": r["context"], "id": r["id"], "why": r["skipped"]} for r in results if "skipped" in r
    ]
    return {"rows": rows, "memory_check": memory, "skipped": skipped, "trace": trace_rows(results, labels)}


def trace_rows(results: list[dict], labels: list[str]) -> list[dict]:
    """Per context x candidate, over the questions full answers right and the candidate loses (from --trace):
    where the teacher-forced answer first leaves full's path (token index, median), the candidate's log p of
    full's token there, the share of the step's selections holding the source there and over the answer."""
    out = []
    for ctx in sorted({r["context"] for r in results}):
        rs = [
            r
            for r in results
            if r["context"] == ctx and "policies" in r and r["policies"].get("full", {}).get("correct")
        ]
        for k in labels:
            lost = [
                r["policies"][k]
                for r in rs
                if not r["policies"][k]["correct"] and "trace" in r["policies"][k]
            ]
            kept = [
                r["policies"][k] for r in rs if r["policies"][k]["correct"] and "trace" in r["policies"][k]
            ]
            if not lost and not kept:
                continue
            div = [t["trace"]["first_divergence"] for t in lost if t["trace"]["first_divergence"] is not None]
            lp = [
                t["trace"]["logp"][d] for t in lost for d in [t["trace"]["first_divergence"]] if d is not None
            ]

            def share(t, i=None):
                tr = t["trace"]
                xs = tr["source_selections"] if i is None else [tr["source_selections"][i]]
                xs = [x for x in xs if x is not None]
                return sum(xs) / (len(xs) * tr["n_selections"]) if xs and tr["n_selections"] else None

            at_div = [
                share(t, t["trace"]["first_divergence"])
                for t in lost
                if t["trace"]["first_divergence"] is not None
            ]
            at_div = [x for x in at_div if x is not None]
            over = [x for x in (share(t) for t in lost) if x is not None]
            over_kept = [x for x in (share(t) for t in kept) if x is not None]
            med = sorted(div)[len(div) // 2] if div else None
            out.append(
                {
                    "context": ctx,
                    "label": k,
                    "lost": len(lost),
                    "diverged": len(div),
                    "median_first_divergence": med,
                    "mean_logp_at_divergence": sum(lp) / len(lp) if lp else None,
                    "source_share_at_divergence": sum(at_div) / len(at_div) if at_div else None,
                    "source_share_lost": sum(over) / len(over) if over else None,
                    "source_share_kept": sum(over_kept) / len(over_kept) if over_kept else None,
                }
            )
    return out


HEADERS = ["context", "policy", "n", "correct", "accuracy", "recall", "kept of full"]


def table_rows(summary: dict) -> list[list]:
    out = []
    for r in summary["rows"]:
        kept = (
            "-" if r["kept_of_full"] is None else f"{r['kept_of_full']:.2f} ({r['kept']}/{r['full_correct']})"
        )
        out.append(
            [
                ctx_label(r["context"]),
                r["label"],
                r["n"],
                r["correct"],
                r["accuracy"],
                r["retrieval_recall"],
                kept,
            ]
        )
    return out


def memory_lines(summary: dict) -> list[str]:
    return [
        f"{ctx_label(m['context'])} {m['label']}: {m['window_correct']}/{m['n']} right, "
        f"{m['window_correct_outside_window']} with the source outside its window"
        + (f" ({', '.join(m['ids'])})" if m["ids"] else "")
        for m in summary["memory_check"]
    ]


def _write(
    cfg: QaConfig, info: dict, windows: list[dict], results: list[dict], wall: float, partial: bool
) -> dict:
    labels = [k for k, _ in cfg.candidates()]
    data = {
        "benchmark": "qa",
        "partial": partial,
        "config": cfg.to_json(),
        "machine": info,
        "wall_s": wall,
        "summary": summarize(results, labels, cfg.contexts),
        "windows": windows,
        "results": results,
    }
    if cfg.out is not None:
        out = Path(cfg.out)
        report.write_json(out / "qa.json", data)
        report.write_text(out / "qa.md", render_markdown(data))
    return data


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def render_markdown(data: dict) -> str:
    c, mi, s = data["config"], data["machine"], data["summary"]
    lines = [
        f"# skv eval qa ({mi['date']})",
        "",
        f"Model `{Path(c['model']).name}`, contexts {', '.join(ctx_label(x) for x in c['contexts'])}, "
        f"sink {c['sink']}, ring {c['ring']}, greedy {c['max_tokens']} tokens, "
        f"{len({r['id'] for r in data['results']})} questions. Correct: every expected slot in the answer; "
        "recall: a sentence of the source selected at some answer step; kept of full: questions the policy "
        "answers right among those full answers right.",
        "",
    ]
    if s["rows"]:
        lines += [report.markdown_table(HEADERS, table_rows(s)), ""]
    if s["memory_check"]:
        lines += ["Memory check (window sees only sink + ring, never the source):", ""]
        lines += [f"- {ln}" for ln in memory_lines(s)] + [""]
    if s["skipped"]:
        lines += [
            "Skipped: "
            + ", ".join(f"{x['id']} ({ctx_label(x['context'])}: {x['why']})" for x in s["skipped"]),
            "",
        ]
    if s.get("trace"):
        lines += [
            "Trace along full's answer (questions full answers right; lost: the candidate's own answer is "
            "wrong): the first answer token where the candidate would not pick full's token (median index), "
            "its log p of full's token there, and the share of the (layer, head) selections holding the "
            "source sentence, at that step and over the answer (lost / kept answers):",
            "",
            report.markdown_table(
                [
                    "context",
                    "policy",
                    "lost",
                    "diverged",
                    "first divergence",
                    "log p there",
                    "source share there",
                    "source share (lost)",
                    "source share (kept)",
                ],
                [
                    [
                        ctx_label(t["context"]),
                        t["label"],
                        t["lost"],
                        t["diverged"],
                        t["median_first_divergence"],
                        _fmt(t["mean_logp_at_divergence"]),
                        _fmt(t["source_share_at_divergence"]),
                        _fmt(t["source_share_lost"]),
                        _fmt(t["source_share_kept"]),
                    ]
                    for t in s["trace"]
                ],
            ),
            "",
        ]
    labels = c["candidates"]
    rows = []
    for r in data["results"]:
        if "policies" not in r:
            continue
        cells = []
        for k in labels:
            p = r["policies"][k]
            mark = "OK" if p["correct"] else "x"
            if p["source_retrieved"] is not None:
                mark += " r" if p["source_retrieved"] else " -"
            cells.append(mark)
        ans = r["policies"][labels[0]]["answer"].replace("|", "/").replace("\n", " ")[:40]
        rows.append([ctx_label(r["context"]), r["id"], r["source_depth"], *cells, ans])
    if rows:
        lines += [
            "Per question (r: source retrieved at some answer step):",
            "",
            report.markdown_table(["context", "id", "depth", *labels, f"{labels[0]} answer"], rows),
            "",
        ]
    return "\n".join(lines)


# ----------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="GGUF model file (default: the built-in model)")
    p.add_argument(
        "--questions",
        help=f"question file (default {DEFAULT_QUESTIONS.relative_to(DEFAULT_QUESTIONS.parents[2])})",
    )
    p.add_argument("--contexts", default="8k", help="context sizes in tokens, e.g. 8k,16k,28k (default 8k)")
    p.add_argument("--policies", default=",".join(DEFAULT_POLICIES))
    p.add_argument(
        "--budgets",
        default=str(DEFAULT_PARAMS.budget),
        help="budgets for the SKV policies (default %(default)s; full runs once)",
    )
    p.add_argument("--sink", type=int, default=DEFAULT_PARAMS.sink)
    p.add_argument("--ring", type=int, default=DEFAULT_PARAMS.ring)
    p.add_argument("--max-tokens", type=int, default=32, help="greedy answer tokens (default 32)")
    p.add_argument("--limit", type=int, help="questions per context (default all), spread over the books")
    p.add_argument("--books", help="only these books, e.g. walden,frankenstein")
    p.add_argument("--threads", type=int, default=defaults.N_THREADS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--stop",
        action="append",
        metavar="TEXT",
        help="stop string ending an answer (repeatable; default: a newline followed by 'Question:')",
    )
    p.add_argument("--gpu-layers", type=int, default=0, help="layers offloaded to the GPU (default 0)")
    p.add_argument("--n-batch", type=int, help="prefill batch (default: the session's)")
    p.add_argument("--prompt-format", help="auto, completion or chat (default: the session's)")
    p.add_argument(
        "--session-opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other SessionConfig field, forwarded as is (repeatable)",
    )
    p.add_argument(
        "--skv-opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other SkvParams field, e.g. max_sentence_len=128 (repeatable)",
    )
    protocol.add_arguments(p)
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=KEY:VALUE,...",
        help="a named sentence candidate at the first budget with other SkvParams, e.g. "
        "heads=gqa:heads or oracle-tok=oracle:tokens (repeatable)",
    )
    p.add_argument(
        "--trace",
        metavar="LABELS",
        help="also decode these candidates (comma-separated labels, or all) along full's answer: per "
        "token, log p of full's token, whether it is the candidate's pick, the source's share of "
        "the selections",
    )
    p.add_argument(
        "--store",
        metavar="DIR",
        help="save each window's prefill here and restore it on the next run with the same windows "
        "(a later run of other candidates skips the prefills; ~13 MB per 1k tokens)",
    )
    p.add_argument("--out", default="bench-results/qa", help="output folder (default bench-results/qa)")


def config_from_args(args: argparse.Namespace) -> QaConfig:
    from engine.models import resolve_model
    from engine.session import SessionConfig

    contexts = tuple(sorted(set(int_list(args.contexts))))
    if min(contexts) < 256:
        raise ValueError("contexts must be at least 256 tokens")
    budgets = tuple(dict.fromkeys(int_list(args.budgets)))
    if args.max_tokens < 1:
        raise ValueError("--max-tokens must be at least 1")
    session_options = parse_options(args.session_opt, SessionConfig, _OWN_SESSION_FIELDS, "session")
    if args.gpu_layers:
        session_options["n_gpu_layers"] = args.gpu_layers
    if args.n_batch is not None:
        session_options["n_batch"] = args.n_batch
    if args.prompt_format is not None:
        session_options["prompt_format"] = args.prompt_format
    cfg = QaConfig(
        model=str(resolve_model(args.model or "")),
        questions_path=Path(args.questions) if args.questions else DEFAULT_QUESTIONS,
        contexts=contexts,
        policies=tuple(p.strip() for p in args.policies.split(",") if p.strip()),
        budgets=budgets,
        sink=args.sink,
        ring=args.ring,
        max_tokens=args.max_tokens,
        limit=args.limit,
        books=tuple(b.strip() for b in (args.books or "").split(",") if b.strip()),
        threads=args.threads,
        seed=args.seed,
        stop=tuple(args.stop) if args.stop else DEFAULT_STOP,
        session_options=session_options,
        skv_options=parse_options(args.skv_opt, SkvParams, _OWN_SKV_FIELDS, "SKV"),
        out=Path(args.out),
        store=Path(args.store) if args.store else None,
    )
    cfg.question_attention, cfg.sentence_start = protocol.from_args(args)
    cfg.variants = tuple(parse_variant(v) for v in args.variant)
    cfg.trace = tuple(x.strip() for x in (args.trace or "").split(",") if x.strip())
    unknown = set(cfg.trace) - {k for k, _ in cfg.candidates()} - {"all"}
    if unknown:
        raise ValueError(f"--trace names no candidate: {', '.join(sorted(unknown))}")
    if not cfg.policies:
        raise ValueError("no policies given")
    cfg.candidates()  # policy names and budgets are valid
    qs = select_questions(load_questions(cfg.questions_path), cfg.books, cfg.limit)
    cfg.texts = {b: load_book_text(b) for b in dict.fromkeys(q.book for q in qs)}
    problems = check_sources(qs, cfg.texts)
    if problems:
        raise ValueError("question sources do not match the books: " + "; ".join(problems[:5]))
    cfg.session_config(max(contexts))  # session options are valid
    return cfg


def main_qa(args: argparse.Namespace) -> int:
    try:
        cfg = config_from_args(args)
    except (ValueError, FileNotFoundError, TypeError) as e:
        raise OptionError(str(e)) from None
    data = run_qa(cfg, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(report.text_table(HEADERS, table_rows(data["summary"])))
    for ln in memory_lines(data["summary"]):
        print("memory check: " + ln)
    print(f"wrote {cfg.out}/qa.json, qa.md")
    return 0
