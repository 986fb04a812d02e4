"""Issue 3, item 7: seq_rm in the middle of a document, clear, and state save -> load reproduce the same
next-token logits; policy switches need no new prefill. Also: parameter validation."""

from __future__ import annotations

import numpy as np
import pytest
from skv_harness import book_text, open_session, prefill_text, teacher_forced

from engine.params import Policy, SkvParams

N_PREFILL = 700
STEPS = 12
BUDGET = 256  # below the context: the selection matters


@pytest.fixture()
def session(tiny_model_path):
    s = open_session(tiny_model_path, n_ctx=2048, budget=BUDGET)
    yield s
    s.close()


def _reference(session):
    tokens = prefill_text(session, book_text(), N_PREFILL)
    return tokens, teacher_forced(session, tokens, N_PREFILL, STEPS)


def test_repeated_decode_after_rewind_is_identical(session):
    tokens, first = _reference(session)
    again = teacher_forced(session, tokens, N_PREFILL, STEPS)
    np.testing.assert_array_equal(first, again)


def test_seq_rm_in_the_middle_then_refill_reproduces_logits(session):
    tokens, first = _reference(session)
    # inside the document, on a prefill batch boundary so the refilled K/V are computed by the same arithmetic
    # (another split changes float rounding in K, hence the scores, hence possibly the selection)
    cut = session.config.n_batch
    assert cut < N_PREFILL
    spans = list(session.spans)
    session.rewind(cut)
    assert session.skv.sentences()[-1][1] <= cut
    # the engine declares the refilled text's sentences again, as it does for any prefill
    session.extend(tokens[cut:N_PREFILL], [s for s in spans if s.tok_end > cut])
    assert session.n_doc_tokens == N_PREFILL and list(session.spans) == spans
    again = teacher_forced(session, tokens, N_PREFILL, STEPS)
    np.testing.assert_allclose(first, again, atol=1e-3)
    assert session.skv.stats().attended_last == BUDGET


def test_a_hole_in_the_middle_is_never_staged(tiny_model_path):
    """seq_rm of a range inside the document leaves its cells empty: no later step stages them. (Positions below
    the first change are read as their own cells without a lookup; the hole must end that stretch.)"""
    s = open_session(tiny_model_path, n_ctx=2048, budget=640)
    try:
        tokens = prefill_text(s, book_text(), N_PREFILL)
        lib = s._llama_cpp
        a, b = 300, 400  # outside the sink (32) and the ring (64)
        assert lib.llama_memory_seq_rm(lib.llama_get_memory(s.llm.ctx), 0, a, b)
        s.llm.eval([tokens[1]])  # a step at position N_PREFILL
        st = s.skv.stats()
        assert st.n_skv_steps >= 1
        # every cached token fits the budget once the hole is out (600 < 640); staged, the hole would fill it
        assert st.attended_last == N_PREFILL - (b - a) + 1
    finally:
        s.close()


def test_clear_then_prefill_reproduces_logits(session):
    tokens, first = _reference(session)
    session.reset()
    assert session.skv.sentences() == []
    tokens2 = prefill_text(session, book_text(), N_PREFILL)
    assert tokens2 == tokens
    again = teacher_forced(session, tokens, N_PREFILL, STEPS)
    np.testing.assert_allclose(first, again, atol=1e-3)


def test_save_then_load_reproduces_logits(session):
    tokens = prefill_text(session, book_text(), N_PREFILL)
    n_sent = len(session.skv.sentences())
    snap = session.snapshot()
    first = teacher_forced(session, tokens, N_PREFILL, STEPS)
    # wreck the state, then restore it
    session.reset()
    assert session.skv.sentences() == []
    session.restore(snap)
    assert len(session.skv.sentences()) == n_sent
    again = teacher_forced(session, tokens, N_PREFILL, STEPS)
    np.testing.assert_allclose(first, again, atol=1e-3)


def test_policy_switches_need_no_prefill(session):
    tokens = prefill_text(session, book_text(), N_PREFILL)
    dense_before = session.skv.stats().n_dense_steps
    outs = {}
    for pol in (Policy.SENTENCE, Policy.FULL, Policy.WINDOW, Policy.CHUNK, Policy.SENTENCE):
        session.set_params(SkvParams(pol, BUDGET))
        outs.setdefault(pol, []).append(teacher_forced(session, tokens, N_PREFILL, STEPS))
    st = session.skv.stats()
    # only the rewinds' two-token re-decodes and the full-policy steps ran dense: no prefill happened
    assert st.n_dense_steps - dense_before == 5 + STEPS
    np.testing.assert_allclose(outs[Policy.SENTENCE][0], outs[Policy.SENTENCE][1], atol=1e-3)
    assert not np.allclose(outs[Policy.WINDOW][0], outs[Policy.FULL][0], atol=1e-2)


def test_window_attends_sink_plus_ring_only(session):
    tokens = prefill_text(session, book_text(), N_PREFILL)
    session.set_params(SkvParams(Policy.WINDOW, BUDGET, sink=16, ring=32))
    teacher_forced(session, tokens, N_PREFILL, 4)
    assert session.skv.stats().attended_last == 48
    assert session.skv.selection(0, 0) == []


@pytest.mark.parametrize(
    ("budget", "sink", "ring"),
    [(0, 32, 64), (96, 32, 64), (50, 32, 64), (-1, 32, 64), (1024, -1, 64), (1024, 32, 0)],
)
def test_bad_budget_is_a_clear_error(session, budget, sink, ring):
    before = session.skv.get_params()
    with pytest.raises(ValueError, match="budget|sink|ring"):
        session.set_params(SkvParams(Policy.SENTENCE, budget, sink, ring))
    assert session.skv.get_params() == before


def test_budget_larger_than_context_is_clamped(session):
    tokens = prefill_text(session, book_text(), N_PREFILL)
    session.set_params(SkvParams(Policy.SENTENCE, 10**6))
    teacher_forced(session, tokens, N_PREFILL, 2)
    st = session.skv.stats()
    assert st.s_max == 2048
    assert st.attended_last == N_PREFILL + 2
