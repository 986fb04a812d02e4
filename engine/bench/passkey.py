"""`skv eval passkey`: the passkey retrieval protocol (landmark attention, Quest).

Haystack: the filler "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
repeated, with the needle "The pass key is {K}. Remember it. {K} is the pass key." inserted at a depth (fraction
of the filler). The haystack is prefilled densely, once per (length, depth); then for each policy the session is
rewound to the haystack and the question plus the answer prefix "The pass key is" are decoded under the policy,
followed by ~8 greedy tokens. The first integer of the answer is the model's answer.

Prompt formats (--format):
- `landmark`: the landmark-attention task prompt ("There is an important info hidden inside a lot of
  irrelevant text. ...") heads the haystack; the question "What is the pass key? The pass key is" follows it.
- `plain`: the haystack alone, then the same question.
- `session`: the engine's document-QA format ("Document: passkey", then "Question: ...\\nAnswer: The pass key is").
- `landmark-qa` (default): the landmark task prompt heads the haystack; the question in the session's Question/Answer
  form. gemma-3-270m (a weak base model) finds keys with it where `landmark` and `session` fail (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine import params as defaults
from engine.bench import protocol, report
from engine.bench.harness import OptionError
from engine.params import (
    DEFAULT_PARAMS,
    SCORE_AUTO,
    Layout,
    Policy,
    Remap,
    SkvParams,
    parse_score_distance,
    score_distance_name,
)

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
NEEDLE = "The pass key is {K}. Remember it. {K} is the pass key."
# --needles: one haystack per length with a needle per depth (one prefill per length, a question per needle). The
# needles name different things: with "the pass key for box 1 / box 2 ...", which read alike, the 0.5B model answers
# the most recent box's key whatever the box asked (docs/BENCHMARKS.md, round 6)
NEEDLE_THINGS = (
    "the red door",
    "the blue boat",
    "the old clock",
    "the green lamp",
    "the stone bridge",
    "the silver key",
    "the night train",
    "the tall tower",
    "the small garden",
)
NEEDLE_BOX = "The secret number of {thing} is {K}. Remember it. {K} is the secret number of {thing}."
QUESTION_BOX = "What is the secret number of {thing}?"
ANSWER_PREFIX_BOX = "The secret number of {thing} is"


def thing(i: int) -> str:
    """The thing needle i (1-based) names."""
    return NEEDLE_THINGS[(i - 1) % len(NEEDLE_THINGS)]


# --needle-set distinct: five facts of different kinds (a code, a count, a phone number, a price, a distance), each
# asked in its own words. With the `alike` set every needle and question reads "the secret number of <thing>", and
# the 0.5B model mixes them up even with full attention inside its trained length (docs/BENCHMARKS.md, round 12:
# full 3/5 at 31k); the distinct set asks the same thing of the retrieval (find the needle past the trained length)
# without that confusion. Each entry: (needle, question, answer prefix, label); {K} is the key.
DISTINCT_NEEDLES = (
    (
        "The lock code of the red door is {K}. Remember it.",
        "What is the lock code of the red door?",
        "The lock code of the red door is",
        "red door code",
    ),
    (
        "Captain Moreau's ship carried {K} barrels of olive oil to Lisbon.",
        "How many barrels of olive oil did Captain Moreau's ship carry to Lisbon?",
        "Captain Moreau's ship carried",
        "barrels of oil",
    ),
    (
        "The telephone number of the bakery on Elm Street is {K}.",
        "What is the telephone number of the bakery on Elm Street?",
        "The telephone number of the bakery on Elm Street is",
        "bakery phone",
    ),
    (
        "Professor Lindqvist paid {K} crowns for the old telescope.",
        "How many crowns did Professor Lindqvist pay for the old telescope?",
        "Professor Lindqvist paid",
        "telescope price",
    ),
    (
        "The mountain village of Arvena lies {K} steps above the river.",
        "How many steps above the river does the mountain village of Arvena lie?",
        "The mountain village of Arvena lies",
        "village steps",
    ),
)
NEEDLE_SETS = ("alike", "distinct")


def needle_entry(needle_set: str, i: int) -> tuple[str, str, str, str]:
    """Needle i (1-based) of the set: (needle with a {K} field, question, answer prefix, label)."""
    if needle_set == "distinct":
        return DISTINCT_NEEDLES[(i - 1) % len(DISTINCT_NEEDLES)]
    t = thing(i)
    return (
        NEEDLE_BOX.format(thing=t, K="{K}"),
        QUESTION_BOX.format(thing=t),
        ANSWER_PREFIX_BOX.format(thing=t),
        t,
    )


def needle_text(needle_set: str, i: int, key: int) -> str:
    """Needle i (1-based) of the set, holding `key`."""
    return needle_entry(needle_set, i)[0].format(K=key)


def needle_question(needle_set: str, i: int) -> tuple[str, str]:
    """The question and the answer prefix that ask for needle i's key."""
    return needle_entry(needle_set, i)[1:3]


TASK = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about the important information there."
)
QUESTION = "What is the pass key?"
ANSWER_PREFIX = "The pass key is"
FORMATS = ("landmark", "plain", "session", "landmark-qa", "chat")  # chat: inside the model's chat template
DEFAULT_LENGTHS = (2048, 8192, 16384)
FULL_LENGTHS = (2048, 4096, 8192, 16384, 28672)
DEFAULT_DEPTHS = (0.1, 0.5, 0.9)
FULL_DEPTHS = (0.1, 0.3, 0.5, 0.7, 0.9)

Log = Callable[[str], None]


@dataclass(slots=True)
class PasskeyConfig:
    model: str
    lengths: tuple[int, ...] = DEFAULT_LENGTHS
    depths: tuple[float, ...] = DEFAULT_DEPTHS
    policies: tuple[str, ...] = ("full", "sentence", "window")
    budget: int = DEFAULT_PARAMS.budget
    budgets: tuple[int, ...] = ()  # extra budgets for sentence/chunk (--full)
    sink: int = DEFAULT_PARAMS.sink
    ring: int = DEFAULT_PARAMS.ring
    fmt: str = "landmark-qa"
    threads: int = 2
    max_tokens: int = 8
    trials: int = 1
    seed: int = 0
    n_batch: int = 512
    out: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # the paper's protocol options (Session.ask): sentence candidates also run with each non-default value given
    question_attention: tuple[str, ...] = ("policy",)
    sentence_start: tuple[str, ...] = ("keep",)
    needles: int = 0  # > 0: one haystack per length holding this many needles, at `depths`
    needle_set: str = "alike"  # NEEDLE_SETS: what the needles say (alike: "the secret number of <thing>")
    remap: Remap = Remap.AUTO  # the SentenceKV candidates' remap_positions
    # the sentence candidates' score_distance: the first for the plain label, each other one as "<label>@<name>"
    score_distances: tuple[int, ...] = (SCORE_AUTO,)
    # the sentence candidates' remap layout: the first for the plain label, each other one as "<label>@<name>"
    layouts: tuple[Layout, ...] = (Layout.ORDER,)
    # a folder for prefilled haystacks (snapshots keyed by everything the prefill depends on): a rerun with other
    # decode-time candidates restores instead of prefilling
    prefill_cache: Path | None = None

    def candidates(self) -> list[tuple[str, SkvParams]]:
        out = []
        for name in self.policies:
            pol = Policy.parse(name)
            budgets = (
                [self.budget] + [b for b in self.budgets if b != self.budget]
                if pol in (Policy.SENTENCE, Policy.CHUNK)
                else [self.budget]
            )
            sel = pol in (Policy.SENTENCE, Policy.CHUNK)
            dists = self.score_distances if sel else self.score_distances[:1]
            layouts = self.layouts if sel else self.layouts[:1]
            for b in budgets:
                for i, d in enumerate(dists):
                    for j, lay in enumerate(layouts):
                        label = (
                            f"{pol.name.lower()}/{b}"
                            + (f"@{score_distance_name(d)}" if i else "")
                            + (f"@{lay.name.lower()}" if j else "")
                        )
                        params = SkvParams(
                            pol, b, self.sink, self.ring, remap=self.remap, score_distance=d, layout=lay
                        )
                        labels = (
                            protocol.variants(label, self.question_attention, self.sentence_start)
                            if pol == Policy.SENTENCE
                            else [label]
                        )
                        out += [(k, params) for k in labels]
        return out


@dataclass(slots=True)
class Haystack:
    text: str  # the document text (what is prefilled, after BOS and any header)
    needle_chars: tuple[int, int]
    key: int
    depth: float


def build_haystack(n_filler: int, depth: float, key: int, fmt: str) -> Haystack:
    """Filler repeated n_filler times with the needle inserted at round(depth * n_filler)."""
    at = min(n_filler, max(0, round(depth * n_filler)))
    parts = [FILLER] * n_filler
    head = (TASK + " ") if fmt.startswith("landmark") or fmt == "chat" else ""
    before = head + " ".join(parts[:at])
    needle = NEEDLE.format(K=key)
    start = len(before) + (1 if before else 0)
    text = (before + " " if before else "") + needle + (" " + " ".join(parts[at:]) if at < n_filler else "")
    return Haystack(text, (start, start + len(needle)), key, depth)


@dataclass(slots=True)
class Needle:
    chars: tuple[int, int]
    key: int
    depth: float
    box: int


@dataclass(slots=True)
class MultiHaystack:
    text: str
    needles: list[Needle]


def build_haystack_multi(
    n_filler: int, depths: tuple[float, ...], keys: list[int], fmt: str, needle_set: str = "alike"
) -> MultiHaystack:
    """Filler repeated n_filler times with needle i + 1 of the set inserted at round(depths[i] * n_filler)."""
    head = (TASK + " ") if fmt.startswith("landmark") or fmt == "chat" else ""
    at = {min(n_filler, max(0, round(d * n_filler))): i for i, d in enumerate(depths)}
    if len(at) != len(depths):
        raise ValueError("two needles at the same depth: use fewer needles or a longer haystack")
    text, needles = head, []
    for k in range(n_filler + 1):
        if k in at:
            i = at[k]
            sep = " " if text and not text.endswith(" ") else ""
            start = len(text) + len(sep)
            needle = needle_text(needle_set, i + 1, keys[i])
            text += sep + needle
            needles.append(Needle((start, start + len(needle)), keys[i], depths[i], i + 1))
        if k < n_filler:
            text += (" " if text and not text.endswith(" ") else "") + FILLER
    needles.sort(key=lambda n: n.box)
    return MultiHaystack(text, needles)


def question_suffix(fmt: str, question: str = QUESTION, prefix: str = ANSWER_PREFIX) -> str:
    """What follows the haystack, decoded under the policy (the prompt plus the answer prefix)."""
    if fmt in ("session", "landmark-qa"):
        return f"\n\nQuestion: {question}\nAnswer: {prefix}"
    return f"\n{question} {prefix}"


def first_int(text: str) -> int | None:
    m = re.search(r"\d+", text)
    return int(m.group()) if m else None


class PasskeyRunner:
    """One SentenceKV session reused for every cell (n_ctx fits the longest length)."""

    def __init__(self, cfg: PasskeyConfig) -> None:
        from engine.session import Session, SessionConfig

        self.cfg = cfg
        cands = cfg.candidates()
        first = next(
            (p for _, p in cands if p.policy != Policy.FULL),
            SkvParams(Policy.SENTENCE, cfg.budget, cfg.sink, cfg.ring),
        )
        self.n_ctx = -(-(max(cfg.lengths) + 64 + cfg.max_tokens) // 256) * 256
        self.session = Session(
            SessionConfig(
                cfg.model,
                n_ctx=self.n_ctx,
                n_threads=cfg.threads,
                n_batch=cfg.n_batch,
                skv=first,
                seed=cfg.seed,
            )
        )
        s = self.session
        from engine.sentences import tokenize_sentences

        # tokens per filler repetition as the prefill counts them (sentence by sentence)
        sample, _ = tokenize_sentences(
            " ".join([FILLER] * 20), s.tokenize, max_tokens=defaults.MAX_SENTENCE_LEN
        )
        self.rep_tokens = len(sample) / 20
        if cfg.fmt == "chat":  # the question closes the user turn; the answer prefix opens the model's turn
            self.suffix_tokens = s.prompt_tokens(QUESTION, ANSWER_PREFIX)
        else:
            self.suffix_tokens = s.tokenize(question_suffix(cfg.fmt))

    def close(self) -> None:
        self.session.close()

    def suffix_for(self, box: int) -> list[int]:
        q, a = needle_question(self.cfg.needle_set, box)
        if self.cfg.fmt == "chat":
            return self.session.prompt_tokens(q, a)
        return self.session.tokenize(question_suffix(self.cfg.fmt, q, a))

    def make_multi(self, length: int, depths: tuple[float, ...], keys: list[int]) -> MultiHaystack:
        """A haystack of about `length` prefilled tokens holding one needle per depth."""
        fixed = (
            sum(
                len(self.session.tokenize(needle_text(self.cfg.needle_set, i + 1, k)))
                for i, k in enumerate(keys)
            )
            + 40
        )
        n = max(len(depths), int((length - fixed - len(self.suffix_for(len(keys)))) / self.rep_tokens))
        return build_haystack_multi(n, depths, keys, self.cfg.fmt, self.cfg.needle_set)

    def make(self, length: int, depth: float, key: int) -> Haystack:
        """A haystack whose prefilled tokens (BOS + header + text) come to about `length`."""
        fixed = len(self.session.tokenize(NEEDLE.format(K=key))) + 40
        n = max(1, int((length - fixed - len(self.suffix_tokens)) / self.rep_tokens))
        return build_haystack(n, depth, key, self.cfg.fmt)

    def prefill(self, hs: Haystack) -> tuple[list[int], float]:
        """Prefill of the haystack with its sentence boundaries; returns (needle sentence ids, seconds)."""
        ids, seconds, _ = self.prefill_text(hs.text, [hs.needle_chars])
        return ids[0], seconds

    def prefill_text(
        self, text: str, needle_chars: list[tuple[int, int]]
    ) -> tuple[list[list[int]], float, list[tuple[int, float]]]:
        """Prefill `text` (past the trained length: the sparse chunked prefill); returns the sentence ids of each
        needle, the seconds, and (tokens done, seconds) after each chunk."""
        from engine.documents import Document
        from engine.sentences import tokenize_sentences

        s = self.session
        t0 = time.perf_counter()
        doc = Document.from_text("passkey", text)
        tokens: list[int] = s.bos_tokens()
        from engine.session import SpanInfo

        spans = [SpanInfo(-1, 0, 0, 0, 1, "")] if tokens else []
        if self.cfg.fmt == "chat" and s.prompts.head:
            h = s.tokenize(s.prompts.head, special=True)
            spans.append(SpanInfo(-1, 0, 0, len(tokens), len(tokens) + len(h), s.prompts.head))
            tokens += h
        if self.cfg.fmt == "session":
            h = s.tokenize("Document: passkey\n\n")
            spans.append(SpanInfo(-1, 0, 0, len(tokens), len(tokens) + len(h), "Document: passkey\n\n"))
            tokens += h
        max_len = s.config.skv.max_sentence_len if s.config.skv else defaults.MAX_SENTENCE_LEN
        d_toks, sents = tokenize_sentences(text, s.tokenize, max_tokens=max_len)
        base = len(tokens)
        needle_ids: list[list[int]] = [[] for _ in needle_chars]
        for sent in sents:
            for i, (a, b) in enumerate(needle_chars):
                if sent.char_end > a and sent.char_start < b:
                    needle_ids[i].append(len(spans))
            spans.append(
                SpanInfo(
                    0,
                    sent.char_start,
                    sent.char_end,
                    base + sent.tok_start,
                    base + sent.tok_end,
                    text[sent.char_start : sent.char_end],
                )
            )
        tokens += d_toks
        if len(tokens) + len(self.suffix_tokens) + 24 + self.cfg.max_tokens > s.n_ctx:
            raise RuntimeError(f"haystack of {len(tokens)} tokens does not fit n_ctx {s.n_ctx}")
        cached = self._cache_path(tokens)
        if cached is not None and cached.exists():
            with cached.open("rb") as f:
                self.snap, seconds, curve = pickle.load(f)
            s.restore(self.snap)
            return needle_ids, seconds, curve  # the original prefill's time and curve
        curve: list[tuple[int, float]] = []
        s.begin_prefill(tokens, spans, [doc]).run(
            on_progress=lambda n, _total: curve.append((n, time.perf_counter() - t0))
        )
        # every policy starts from this snapshot: Session.rewind after decode steps is not exact on an iSWA
        # model (the sliding-window layers have evicted the cells the rewound steps pushed out)
        self.snap = s.snapshot()
        seconds = time.perf_counter() - t0
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(".tmp")
            with tmp.open("wb") as f:
                pickle.dump((self.snap, seconds, curve), f, protocol=pickle.HIGHEST_PROTOCOL)
            tmp.replace(cached)
        return needle_ids, seconds, curve

    def _cache_path(self, tokens: list[int]) -> Path | None:
        """The snapshot file of this prefill in --prefill-cache: keyed by the model, the tokens, the context, the
        native library and the SentenceKV parameters the prefill ran under (past the trained length its chunks
        select sentences)."""
        if self.cfg.prefill_cache is None:
            return None
        from engine import native
        from engine.models import model_identity

        s = self.session
        h = hashlib.sha256()
        h.update(
            repr(
                (
                    model_identity(s.config.model_path),
                    s.n_ctx,
                    s.config.n_batch,
                    native.check_native(),
                    s.config.skv,
                )
            ).encode()
        )
        h.update(np.asarray(tokens, dtype=np.int32).tobytes())
        return self.cfg.prefill_cache / f"passkey-{len(tokens)}-{h.hexdigest()[:24]}.pkl"

    def answer(
        self,
        params: SkvParams,
        needle_ids: list[int],
        needle_toks: tuple[int, int],
        question_attention: str = "policy",
        sentence_start: str = "keep",
        suffix_tokens: list[int] | None = None,
    ) -> dict:
        """Rewind to the haystack, decode the question + prefix under `params` (or prefill them densely), then
        greedy tokens (sentence_start dense: the first token of each new sentence attends the whole cache)."""
        s = self.session
        s.set_params(params)
        s.restore(self.snap)
        suffix = self.suffix_tokens if suffix_tokens is None else suffix_tokens
        r = s.ask(
            "",
            prompt_tokens=suffix,
            max_tokens=self.cfg.max_tokens,
            question_attention=question_attention,
            sentence_start=sentence_start,
        )
        # the selection behind each answer token: the last prompt step's (none when the question ran dense: its
        # logits came from the dense batch), then each answer token's but the last (it chooses nothing read here)
        steps = ([r.first_step] if r.first_step is not None else []) + (
            r.steps[:-1] if r.steps and len(r.tokens) == self.cfg.max_tokens else r.steps
        )
        text = r.answer
        res: dict[str, Any] = {"answer": text.strip(), "parsed": first_int(text)}
        if steps:
            nsel = steps[0].n_selections

            # (layer, head) selections holding a needle sentence (the best of the needle's sentences)
            def hits(st) -> int:
                return max((n for sid, n in st.counts if sid in needle_ids), default=0)

            res["needle_selected_first"] = hits(steps[0]) / nsel if nsel else 0.0
            res["needle_selected_any"] = any(hits(st) > 0 for st in steps)
            res["needle_weight"] = sum(hits(st) for st in steps) / sum(st.n_selections for st in steps)
        else:
            res["needle_selected_first"] = None
            res["needle_selected_any"] = None
            res["needle_weight"] = None
        p = s.n_doc_tokens + len(suffix)
        ring_start = p - params.ring
        st = s.skv.stats() if s.skv is not None and params.policy != Policy.FULL else None
        res["positions_remapped"] = bool(st.positions_remapped) if st else False
        res["score_distance"] = st.score_distance if st else None
        res["max_position"] = st.max_position if st else p + len(r.tokens)
        res["needle_in_sink_or_ring"] = needle_toks[1] <= params.sink or needle_toks[0] >= ring_start
        return res


def run_passkey(cfg: PasskeyConfig, log: Log = print) -> dict:
    info = report.machine_info()
    runner = PasskeyRunner(cfg)
    rng = np.random.default_rng(cfg.seed)
    cells: list[dict] = []
    prefills: list[dict] = []
    t0 = time.perf_counter()
    try:
        if cfg.needles:
            for length in cfg.lengths:
                _run_multi(cfg, runner, rng, length, cells, prefills, log)
                if cfg.out is not None:
                    _write(cfg, info, cells, time.perf_counter() - t0, partial=True, prefills=prefills)
        for length in cfg.lengths if not cfg.needles else ():
            for depth in cfg.depths:
                for trial in range(cfg.trials):
                    key = int(rng.integers(10000, 100000))
                    hs = runner.make(length, depth, key)
                    needle_ids, pre_s = runner.prefill(hs)
                    sp = [runner.session.spans[i] for i in needle_ids]
                    needle_toks = (min(x.tok_start for x in sp), max(x.tok_end for x in sp)) if sp else (0, 0)
                    cell = {
                        "length": length,
                        "depth": depth,
                        "trial": trial,
                        "key": key,
                        "tokens": runner.session.n_doc_tokens,
                        "prefill_s": pre_s,
                        "needle_sentences": needle_ids,
                        "needle_tokens": list(needle_toks),
                        "policies": {},
                    }
                    for label, params in cfg.candidates():
                        r = runner.answer(params, needle_ids, needle_toks, *protocol.of(label))
                        r["correct"] = r["parsed"] == key
                        cell["policies"][label] = r
                    cells.append(cell)
                    log(
                        f"[{length} d={depth} key={key}] "
                        + ", ".join(
                            f"{k}: {v['answer']!r}{' OK' if v['correct'] else ''}"
                            for k, v in cell["policies"].items()
                        )
                    )
                    if cfg.out is not None:
                        _write(cfg, info, cells, time.perf_counter() - t0, partial=True)
    finally:
        runner.close()
    info["uptime_end"] = report.uptime()
    return _write(cfg, info, cells, time.perf_counter() - t0, partial=False, prefills=prefills)


def tok_s_between(curve: list[tuple[int, float]], a: int, b: int) -> float | None:
    """Prefill tok/s over the chunks that ended in (a, b] tokens (the chunk ending at or before a gives the start)."""
    pts = [(0, 0.0), *curve]
    start = max((x for x in pts if x[0] <= a), key=lambda x: x[0], default=None)
    end = max((x for x in pts if x[0] <= b), key=lambda x: x[0], default=None)
    if start is None or end is None or end[0] <= start[0] or end[1] <= start[1]:
        return None
    return (end[0] - start[0]) / (end[1] - start[1])


def _run_multi(
    cfg: PasskeyConfig,
    runner: PasskeyRunner,
    rng,
    length: int,
    cells: list[dict],
    prefills: list[dict],
    log: Log,
) -> None:
    """One haystack of `length` with a needle per depth: one prefill, then every needle asked under every policy."""
    keys = [int(rng.integers(10000, 100000)) for _ in cfg.depths]
    hs = runner.make_multi(length, tuple(cfg.depths), keys)
    ids, pre_s, curve = runner.prefill_text(hs.text, [n.chars for n in hs.needles])
    n_tok = runner.session.n_doc_tokens
    n_train = runner.session.n_ctx_train
    at8k, last4k = tok_s_between(curve, 6144, 10240), tok_s_between(curve, n_tok - 4096, n_tok)
    prefills.append(
        {
            "length": length,
            "tokens": n_tok,
            "n_ctx_train": n_train,
            "prefill_s": pre_s,
            "tok_s_around_8k": at8k,
            "tok_s_last_4k": last4k,
            "last4k_over_8k": last4k / at8k if at8k and last4k else None,
            "curve": curve,
        }
    )
    log(
        f"[{length}] prefilled {n_tok} tokens in {pre_s:.0f} s (trained {n_train}); tok/s around 8k "
        f"{at8k or 0:.1f}, last 4k {last4k or 0:.1f}"
    )
    for needle, needle_ids in zip(hs.needles, ids, strict=True):
        sp = [runner.session.spans[i] for i in needle_ids]
        needle_toks = (min(x.tok_start for x in sp), max(x.tok_end for x in sp)) if sp else (0, 0)
        cell = {
            "length": length,
            "depth": needle.depth,
            "trial": 0,
            "key": needle.key,
            "box": needle.box,
            "tokens": n_tok,
            "prefill_s": pre_s,
            "needle_sentences": needle_ids,
            "needle_tokens": list(needle_toks),
            "policies": {},
        }
        suffix = runner.suffix_for(needle.box)
        for label, params in cfg.candidates():
            r = runner.answer(params, needle_ids, needle_toks, *protocol.of(label), suffix_tokens=suffix)
            r["correct"] = r["parsed"] == needle.key
            cell["policies"][label] = r
        cells.append(cell)
        log(
            f"[{length} {needle_entry(cfg.needle_set, needle.box)[3]} d={needle.depth} key={needle.key}] "
            + ", ".join(
                f"{k}: {v['answer']!r}{' OK' if v['correct'] else ''}" for k, v in cell["policies"].items()
            )
        )


def accuracy_grid(cells: list[dict], label: str, lengths: tuple[int, ...], depths: tuple[float, ...]):
    grid = []
    for L in lengths:
        row = []
        for d in depths:
            cs = [c for c in cells if c["length"] == L and c["depth"] == d and label in c["policies"]]
            row.append(sum(c["policies"][label]["correct"] for c in cs) / len(cs) if cs else None)
        grid.append(row)
    return grid


def verdict(cells: list[dict], main: str = "sentence", window: str = "window") -> dict:
    """The issue's target: sentence correct wherever full is; window misses keys outside its window."""
    full_l = next((k for k in (cells[0]["policies"] if cells else {}) if k.startswith("full/")), None)
    sent_l = next((k for k in (cells[0]["policies"] if cells else {}) if k.startswith(main + "/")), None)
    win_l = next((k for k in (cells[0]["policies"] if cells else {}) if k.startswith(window + "/")), None)
    out: dict[str, Any] = {"full": full_l, "sentence": sent_l, "window": win_l}
    if full_l and sent_l:
        misses = [
            (c["length"], c["depth"])
            for c in cells
            if c["policies"][full_l]["correct"] and not c["policies"][sent_l]["correct"]
        ]
        out["sentence_matches_full"] = not misses
        out["sentence_misses_where_full_correct"] = misses
        out["full_correct"] = sum(c["policies"][full_l]["correct"] for c in cells)
        out["sentence_correct"] = sum(c["policies"][sent_l]["correct"] for c in cells)
    if win_l:
        outside = [c for c in cells if not c["policies"][win_l]["needle_in_sink_or_ring"]]
        out["window_correct_outside_window"] = sum(c["policies"][win_l]["correct"] for c in outside)
        out["window_cells_outside_window"] = len(outside)
    out["cells"] = len(cells)
    return out


def _question_shown(cfg: PasskeyConfig) -> str:
    """The question as the report shows it: the pass-key one, or (--needles) the template asked per needle."""
    if cfg.needles and cfg.needle_set == "distinct":
        return " | ".join(needle_entry("distinct", i + 1)[1] for i in range(cfg.needles))
    q, a = (
        (QUESTION_BOX.format(thing="{thing}"), ANSWER_PREFIX_BOX.format(thing="{thing}"))
        if cfg.needles
        else (QUESTION, ANSWER_PREFIX)
    )
    return f"{q} / {a}" if cfg.fmt == "chat" else question_suffix(cfg.fmt, q, a)


def _write(
    cfg: PasskeyConfig,
    info: dict,
    cells: list[dict],
    wall: float,
    partial: bool,
    prefills: list[dict] | None = None,
) -> dict:
    data = {
        "benchmark": "passkey",
        "partial": partial,
        "config": {
            "model": cfg.model,
            "lengths": list(cfg.lengths),
            "depths": list(cfg.depths),
            "format": cfg.fmt,
            "candidates": [k for k, _ in cfg.candidates()],
            "sink": cfg.sink,
            "ring": cfg.ring,
            "threads": cfg.threads,
            "max_tokens": cfg.max_tokens,
            "trials": cfg.trials,
            "seed": cfg.seed,
            "filler": FILLER,
            "needle": NEEDLE,
            "question": _question_shown(cfg),
            "needles": cfg.needles,
            "needle_set": cfg.needle_set if cfg.needles else None,
            "needle_box": (
                NEEDLE_BOX
                if cfg.needle_set == "alike"
                else " | ".join(needle_entry("distinct", i + 1)[0] for i in range(cfg.needles))
            )
            if cfg.needles
            else None,
            "remap_positions": cfg.remap.name.lower(),
            "score_distances": [score_distance_name(d) for d in cfg.score_distances],
            "layouts": [lay.name.lower() for lay in cfg.layouts],
            **cfg.extra,
        },
        "machine": info,
        "wall_s": wall,
        "cells": cells,
        "prefills": prefills or [],
        "verdict": verdict(cells) if cells else {},
    }
    if cfg.out is not None:
        write_outputs(Path(cfg.out), data, final=not partial)
    return data


def summary_rows(data: dict) -> tuple[list[str], list[list[Any]]]:
    labels = data["config"]["candidates"]
    headers = ["length", "depth", "tokens", "key", *labels, "needle sel. (sentence)"]
    sent = next((k for k in labels if k.startswith("sentence/")), None)
    rows = []
    for c in data["cells"]:
        row = [c["length"], c["depth"], c["tokens"], c["key"]]
        for k in labels:
            p = c["policies"][k]
            row.append(f"{'OK' if p['correct'] else 'x'} {p['answer'][:14]!r}")
        if sent:
            p = c["policies"][sent]
            nf = p.get("needle_selected_first")
            row.append(
                "-" if nf is None else f"{nf:.2f} first / {'any' if p['needle_selected_any'] else 'none'}"
            )
        else:
            row.append("-")
        rows.append(row)
    return headers, rows


def render_markdown(data: dict) -> str:
    cfg = data["config"]
    mi = data["machine"]
    lines = [
        f"# skv eval passkey ({mi['date']})",
        "",
        f"Model `{Path(cfg['model']).name}`, format `{cfg['format']}`, sink {cfg['sink']}, ring {cfg['ring']}, "
        f"greedy {cfg['max_tokens']} tokens, {cfg['trials']} trial(s) per cell, seed {cfg['seed']}. "
        f"Question decoded under the policy: `{cfg['question']!r}`.",
        "",
    ]
    if data["cells"]:
        h, rows = summary_rows(data)
        lines += [report.markdown_table(h, rows), ""]
        lines += ["Accuracy per policy (rows: length, columns: depth):", ""]
        lens = tuple(cfg["lengths"])
        deps = tuple(cfg["depths"])
        for k in cfg["candidates"]:
            g = accuracy_grid(data["cells"], k, lens, deps)
            lines += [
                f"`{k}`:",
                "",
                report.markdown_table(
                    ["length", *[str(d) for d in deps]], [[L, *r] for L, r in zip(lens, g, strict=True)]
                ),
                "",
            ]
        v = data["verdict"]
        lines += ["Verdict: " + ", ".join(f"{k} = {v[k]}" for k in v), ""]
    if data.get("prefills"):
        lines += [
            "Prefills (one per length; past the trained length the chunks are sparse):",
            "",
            report.markdown_table(
                ["length", "tokens", "trained", "prefill s", "tok/s around 8k", "tok/s last 4k", "last/8k"],
                [
                    [
                        x["length"],
                        x["tokens"],
                        x["n_ctx_train"],
                        x["prefill_s"],
                        x["tok_s_around_8k"],
                        x["tok_s_last_4k"],
                        x["last4k_over_8k"],
                    ]
                    for x in data["prefills"]
                ],
            ),
            "",
        ]
    return "\n".join(lines)


def write_outputs(out: Path, data: dict, final: bool = True) -> dict[str, Path]:
    paths = {
        "json": report.write_json(out / "passkey.json", data),
        "md": report.write_text(out / "passkey.md", render_markdown(data)),
    }
    if final and data["cells"]:
        cfg = data["config"]
        lens, deps = tuple(cfg["lengths"]), tuple(cfg["depths"])
        grids = {k: accuracy_grid(data["cells"], k, lens, deps) for k in cfg["candidates"]}
        p = report.heatmap(
            out / "passkey.png",
            f"Passkey accuracy ({Path(cfg['model']).name}, {cfg['format']})",
            grids,
            [f"{L // 1024}k" if L % 1024 == 0 else str(L) for L in lens],
            [str(d) for d in deps],
            "depth",
            "length",
        )
        if p:
            paths["png"] = p
    return paths


# ----------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="GGUF model file (default: the built-in Qwen2.5-Coder-0.5B-Instruct)")
    p.add_argument("--lengths", help="haystack lengths in tokens, e.g. 2k,8k,16k (default)")
    p.add_argument("--depths", help="needle depths, e.g. 0.1,0.5,0.9 (default)")
    p.add_argument(
        "--full", action="store_true", help="full grid: 2k..28k x 5 depths, chunk, budgets 512/2048"
    )
    p.add_argument(
        "--policies", default="full,sentence,window", help="policies (default full,sentence,window)"
    )
    p.add_argument(
        "--budget", type=int, default=DEFAULT_PARAMS.budget, help="budget tau (default %(default)s)"
    )
    p.add_argument(
        "--budgets",
        help="more budgets for the sentence and chunk candidates, e.g. 2048,4096 (the "
        "prefill runs under --budget)",
    )
    p.add_argument("--sink", type=int, default=DEFAULT_PARAMS.sink)
    p.add_argument("--ring", type=int, default=DEFAULT_PARAMS.ring)
    p.add_argument("--format", dest="fmt", default="landmark-qa", choices=FORMATS, help="prompt format")
    p.add_argument("--threads", type=int, default=defaults.N_THREADS)
    p.add_argument("--max-tokens", type=int, default=8, help="greedy answer tokens (default 8)")
    p.add_argument("--trials", type=int, default=1, help="keys per cell (default 1)")
    p.add_argument(
        "--remap-positions",
        default="auto",
        choices=["auto", "on", "off"],
        help="the SentenceKV candidates' position remapping (default auto: past the trained length)",
    )
    p.add_argument(
        "--score-distances",
        default="auto",
        metavar="auto|real|N,...",
        help="the sentence candidates' score distance; more than one: a candidate each, the first under "
        "the plain label, the others as sentence/<budget>@<value> (default auto)",
    )
    p.add_argument(
        "--layouts",
        default="order",
        metavar="order|stack,...",
        help="the sentence candidates' remap layout (where remapped retrieved sentences sit); more than "
        "one: a candidate each, the others as sentence/<budget>@<layout> (default order)",
    )
    p.add_argument(
        "--prefill-cache",
        metavar="DIR",
        help="keep each prefilled haystack here and restore it the next time (same model, tokens, "
        "context and parameters): a rerun with other decode-time candidates skips the prefill; the "
        "files are pickles, so use a folder only you write to",
    )
    p.add_argument(
        "--needles",
        action="store_true",
        help="one haystack per length holding a needle at each depth (one prefill per length)",
    )
    p.add_argument(
        "--needle-set",
        default="alike",
        choices=NEEDLE_SETS,
        help='with --needles: alike ("the secret number of <thing>" five times, the default) or '
        "distinct (five facts of different kinds, each asked in its own words)",
    )
    p.add_argument("--seed", type=int, default=0)
    protocol.add_arguments(p)
    p.add_argument(
        "--out", default="bench-results/passkey", help="output folder (default bench-results/passkey)"
    )


def config_from_args(args: argparse.Namespace) -> PasskeyConfig:
    from engine.bench.harness import int_list
    from engine.models import resolve_model

    lengths = int_list(args.lengths) if args.lengths else (FULL_LENGTHS if args.full else DEFAULT_LENGTHS)
    if args.depths:
        depths = tuple(float(x) for x in args.depths.split(",") if x.strip())
    else:
        depths = FULL_DEPTHS if args.full else DEFAULT_DEPTHS
    if any(not 0.0 <= d <= 1.0 for d in depths):
        raise ValueError("depths must lie in [0, 1]")
    if min(lengths) < 128:
        raise ValueError("lengths must be at least 128 tokens")
    if args.max_tokens < 1 or args.trials < 1:
        raise ValueError("--max-tokens and --trials must be at least 1")
    policies = tuple(x.strip() for x in args.policies.split(",") if x.strip())
    budgets: tuple[int, ...] = int_list(args.budgets) if args.budgets else ()
    if args.full:
        budgets = (512, 1024, 2048)
        if "chunk" not in policies:
            policies = (*policies, "chunk")
    for pol in policies:
        Policy.parse(pol)
    cfg = PasskeyConfig(
        model=str(resolve_model(args.model or "")),
        lengths=tuple(sorted(lengths)),
        depths=depths,
        policies=policies,
        budget=args.budget,
        budgets=budgets,
        sink=args.sink,
        ring=args.ring,
        fmt=args.fmt,
        threads=args.threads,
        max_tokens=args.max_tokens,
        trials=args.trials,
        seed=args.seed,
        out=Path(args.out),
        needles=len(depths) if args.needles else 0,
        needle_set=args.needle_set,
        remap=Remap.parse(args.remap_positions),
        score_distances=tuple(
            dict.fromkeys(parse_score_distance(x) for x in args.score_distances.split(",") if x.strip())
        ),
        layouts=tuple(dict.fromkeys(Layout.parse(x.strip()) for x in args.layouts.split(",") if x.strip()))
        or (Layout.ORDER,),
        prefill_cache=Path(args.prefill_cache) if args.prefill_cache else None,
    )
    if cfg.needle_set == "distinct" and cfg.needles > len(DISTINCT_NEEDLES):
        raise OptionError(
            f"--needle-set distinct has {len(DISTINCT_NEEDLES)} needles: give at most "
            f"{len(DISTINCT_NEEDLES)} depths"
        )
    cfg.question_attention, cfg.sentence_start = protocol.from_args(args)
    cfg.candidates()
    return cfg


def main_passkey(args: argparse.Namespace) -> int:
    try:
        cfg = config_from_args(args)
    except ValueError as e:
        raise OptionError(str(e)) from None
    data = run_passkey(cfg, log=lambda s: print(s, file=sys.stderr, flush=True))
    h, rows = summary_rows(data)
    print(report.text_table(h, rows))
    for k in data["config"]["candidates"]:
        g = accuracy_grid(data["cells"], k, tuple(cfg.lengths), tuple(cfg.depths))
        acc = [v for r in g for v in r if v is not None]
        print(f"{k}: {sum(acc) / len(acc):.2f} accuracy over {len(acc)} cells" if acc else f"{k}: no cells")
    print("verdict: " + ", ".join(f"{k}={v}" for k, v in data["verdict"].items()))
    print(f"wrote {cfg.out}/passkey.json, passkey.md" + (", passkey.png" if report.have_matplotlib() else ""))
    return 0
