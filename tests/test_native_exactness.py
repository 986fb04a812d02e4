"""Issue 3, item 1: with a budget that covers the context, every token goes through the staged path and the logits
equal dense attention on the same library (max |dlogit| <= 0.02, same top-1 wherever dense is confident)."""

from __future__ import annotations

import pytest
from skv_harness import book_text, compare, open_session, prefill_text, teacher_forced

from engine.params import Policy, SkvParams


def _exactness(model_path, n_ctx: int, n_prefill: int, n_steps: int, budget: int) -> None:
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


def test_budget_covering_context_matches_dense_on_tiny_model(tiny_model_path):
    _exactness(tiny_model_path, n_ctx=2048, n_prefill=900, n_steps=64, budget=4096)


@pytest.mark.slow
def test_budget_covering_context_matches_dense_on_gemma_3k(gemma_model_path):
    _exactness(gemma_model_path, n_ctx=4096, n_prefill=3100, n_steps=64, budget=4096)


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
