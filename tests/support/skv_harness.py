"""Helpers shared by the native SentenceKV tests: a session on a model, teacher-forced decode, logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def book_text(name: str = "alice_in_wonderland.txt", start: int = 20_000, n_chars: int = 40_000) -> str:
    from engine.bench.report import books_dir

    path = books_dir() / name
    if not path.exists():
        import pytest

        pytest.fail(f"{path} is missing: the books live in resources/books (or set SKV_BOOKS_DIR)")
    return path.read_text(encoding="utf-8")[start : start + n_chars]


def open_session(model_path: Path, n_ctx: int, budget: int, sink: int = 32, ring: int = 64, threads: int = 2):
    """Layers on the CPU unless SKV_TEST_GPU_LAYERS says (native/tools/gpu_check.sh)."""
    from eval_capture import gpu_layers

    from engine.params import SkvParams
    from engine.session import Session, SessionConfig

    return Session(
        SessionConfig(
            str(model_path),
            n_ctx=n_ctx,
            n_threads=threads,
            skv=SkvParams(budget=budget, sink=sink, ring=ring),
            n_gpu_layers=gpu_layers(),
        )
    )


def prefill_text(session, text: str, n_prefill: int) -> list[int]:
    """Prefill the first n_prefill tokens of text (sentence boundaries declared); returns all its tokens."""
    from engine.documents import Document

    doc = Document.from_text("doc.txt", text)
    plan = session.plan([doc], reserve=0)
    tokens = plan.tokens
    assert len(tokens) > n_prefill, f"text too short: {len(tokens)} tokens"
    session.prefill(tokens[:n_prefill], [s for s in plan.spans if s.tok_end <= n_prefill], [doc])
    return tokens


def teacher_forced(session, tokens: list[int], start: int, n_steps: int) -> np.ndarray:
    """Rewind to `start`, then decode tokens[start : start + n_steps] one at a time; logits of every step."""
    session.rewind(start)
    return session.teacher_force(tokens[start : start + n_steps])


def compare(dense: np.ndarray, sparse: np.ndarray, margin: float = 0.01) -> tuple[float, int]:
    """(max |dlogit|, number of steps whose top-1 differs although dense's top-2 margin exceeds `margin`)."""
    max_abs = float(np.abs(dense - sparse).max())
    top2 = np.sort(dense, axis=1)[:, -2:]
    confident = (top2[:, 1] - top2[:, 0]) > margin
    bad = int(np.sum((dense.argmax(1) != sparse.argmax(1)) & confident))
    return max_abs, bad


def check_staged_matches_dense(model_path, n_ctx: int, n_prefill: int, n_steps: int, budget: int) -> None:
    """With a budget covering the context every step runs the staged path and its logits equal dense attention's
    on the same library (max |dlogit| <= 0.02, no top-1 flipped where dense is confident)."""
    from engine.params import Policy, SkvParams

    s = open_session(model_path, n_ctx=n_ctx, budget=budget)
    try:
        tokens = prefill_text(s, book_text(n_chars=60_000), n_prefill)
        s.set_params(SkvParams(Policy.FULL, budget))
        dense = teacher_forced(s, tokens, n_prefill, n_steps)
        before = s.skv.stats()
        s.set_params(SkvParams(Policy.SENTENCE, budget))
        staged = teacher_forced(s, tokens, n_prefill, n_steps)
        after = s.skv.stats()
    finally:
        s.close()
    # the staged path ran for every step and attended every token
    assert after.n_skv_steps - before.n_skv_steps == n_steps
    assert after.attended_last == n_prefill + n_steps
    assert after.rows_uploaded_total > before.rows_uploaded_total
    max_abs, n_flipped = compare(dense, staged)
    assert max_abs <= 0.02, f"max |dlogit| {max_abs}"
    assert n_flipped == 0
