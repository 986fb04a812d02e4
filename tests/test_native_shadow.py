"""The device upload path (host shadow of the staging rows, one copy of the dirty slot range per step, the in-graph
row mirrored after each step) gives the same logits as writing rows in place. LLAMA_SKV_SHADOW=1 makes a CPU build
take that path, so the code a GPU runs is tested here."""

from __future__ import annotations

import numpy as np
import pytest
from skv_harness import book_text, open_session, prefill_text, teacher_forced

from engine.params import Policy, SkvParams


def _run(model_path, shadow: bool, monkeypatch) -> list[np.ndarray]:
    monkeypatch.setenv("LLAMA_SKV_SHADOW", "1" if shadow else "0")
    s = open_session(model_path, n_ctx=2048, budget=256)
    try:
        assert s.skv.stats().on_device == int(shadow)
        tokens = prefill_text(s, book_text(), 700)
        outs = [teacher_forced(s, tokens, 700, 24)]  # sparse: rows move in and out of the staging
        s.skv.add_boundaries([712])  # a sentence closes between decode calls
        outs.append(teacher_forced(s, tokens, 700, 24))
        s.set_params(SkvParams(Policy.SENTENCE, 4096))  # budget covers the context: ordered layout
        outs.append(teacher_forced(s, tokens, 700, 24))
        s.set_params(SkvParams(Policy.CHUNK, 256))
        outs.append(teacher_forced(s, tokens, 700, 24))
        return outs
    finally:
        s.close()


@pytest.mark.parametrize("model", ["tiny"])
def test_shadow_upload_path_matches_in_place_writes(tiny_model_path, monkeypatch, model):
    direct = _run(tiny_model_path, False, monkeypatch)
    shadow = _run(tiny_model_path, True, monkeypatch)
    for a, b in zip(direct, shadow, strict=True):
        np.testing.assert_array_equal(a, b)
