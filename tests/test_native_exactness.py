"""Issue 3, item 1: with a budget that covers the context, every token goes through the staged path and the logits
equal dense attention on the same library (max |dlogit| <= 0.02, same top-1 wherever dense is confident)."""

from __future__ import annotations

import pytest
from skv_harness import (
    book_text,
    check_staged_matches_dense,
    compare,
    open_session,
    prefill_text,
    teacher_forced,
)

from engine.params import Policy, SkvParams


def test_budget_covering_context_matches_dense_on_tiny_model(tiny_model_path):
    check_staged_matches_dense(tiny_model_path, n_ctx=2048, n_prefill=900, n_steps=64, budget=4096)


@pytest.mark.slow
def test_budget_covering_context_matches_dense_on_gemma_3k(gemma_model_path):
    check_staged_matches_dense(gemma_model_path, n_ctx=4096, n_prefill=3100, n_steps=64, budget=4096)


def test_small_budget_differs_from_dense(tiny_model_path):
    """The check above can fail: a budget below the context changes the logits."""
    s = open_session(tiny_model_path, n_ctx=2048, budget=256)
    try:
        tokens = prefill_text(s, book_text(), 900)
        s.set_params(SkvParams(Policy.FULL, 256))
        dense = teacher_forced(s, tokens, 900, 16)
        s.set_params(SkvParams(Policy.SENTENCE, 256))
        sparse = teacher_forced(s, tokens, 900, 16)
        assert s.skv.stats().attended_last == 256
    finally:
        s.close()
    max_abs, _ = compare(dense, sparse)
    assert max_abs > 0.05
