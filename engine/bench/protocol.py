"""The paper's protocol options as benchmark candidates (Session.ask's question_attention and sentence_start):
`--question-attention policy,dense` and `--sentence-start keep,dense` add `sentence/B+qdense` and
`sentence/B+sdense` beside `sentence/B`, so every option is measured on the same prefill as ours."""

from __future__ import annotations

import argparse

from engine.params import QUESTION_ATTENTION_CHOICES as QUESTION_ATTENTION
from engine.params import SENTENCE_START_CHOICES as SENTENCE_START


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--question-attention",
        default="policy",
        help="policy, dense or both (policy,dense): dense adds sentence/B+qdense candidates",
    )
    p.add_argument(
        "--sentence-start",
        default="keep",
        help="keep, dense or both (keep,dense): dense adds sentence/B+sdense candidates",
    )


def from_args(args: argparse.Namespace) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(question_attention values, sentence_start values); ValueError for anything else."""
    qa = tuple(x.strip() for x in args.question_attention.split(",") if x.strip())
    ss = tuple(x.strip() for x in args.sentence_start.split(",") if x.strip())
    if not qa or not set(qa) <= set(QUESTION_ATTENTION):
        raise ValueError(f"--question-attention takes policy and/or dense, got {args.question_attention!r}")
    if not ss or not set(ss) <= set(SENTENCE_START):
        raise ValueError(f"--sentence-start takes keep and/or dense, got {args.sentence_start!r}")
    return qa, ss


def variants(label: str, question_attention: tuple[str, ...], sentence_start: tuple[str, ...]) -> list[str]:
    """The candidate labels of one sentence candidate: ours, then each dense option asked for."""
    out = [label]
    if "dense" in question_attention:
        out.append(label + "+qdense")
    if "dense" in sentence_start:
        out.append(label + "+sdense")
    return out


def of(label: str) -> tuple[str, str]:
    """(question_attention, sentence_start) of a candidate label."""
    return ("dense" if "+qdense" in label else "policy", "dense" if "+sdense" in label else "keep")
