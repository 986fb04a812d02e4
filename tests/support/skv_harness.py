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
