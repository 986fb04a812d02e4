"""`skv eval kl` runs end to end on the tiny model (random weights: only the harness is checked, not fidelity)."""

from __future__ import annotations

import json

import numpy as np

from engine.bench.kl import KlConfig, compare_logits, run_kl


def test_compare_logits_is_zero_for_identical_and_positive_otherwise():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 50)).astype(np.float32)
    same = compare_logits(a, a.copy(), np.array([1, 2, 3, 4]))
    assert same["kl_mean"] < 1e-9 and same["top1_agree"] == 1.0
    other = compare_logits(a, a[::-1].copy(), np.array([1, 2, 3, 4]))
    assert other["kl_mean"] > 0.01


def test_kl_harness_runs_on_tiny_model(tiny_model_path, tmp_path):
    cfg = KlConfig(
        str(tiny_model_path),
        book="alice_in_wonderland.txt",
        n_ctx=1024,
        prefix_tokens=600,
        n_eval=8,
        budgets=(256,),
        threads=1,
        out=tmp_path,
    )
    data = run_kl(cfg, log=lambda *_: None)
    assert [r["policy"] for r in data["rows"]] == ["sentence", "chunk", "window"]
    for r in data["rows"]:
        assert r["kl_mean"] >= 0 and 0 <= r["top1_agree"] <= 1 and r["ppl"] > 0
    json.dumps(data)
