"""Scores at a fixed distance (native/README.md, "Scores at a fixed distance"): where positions are remapped, every
sentence is scored as if it sat `score_distance` positions before the query (InfLLM's rule), not at its real
distance, which past the trained length is one the model never saw.

Checked on the tiny model (trained to 512 tokens, a 1024-token context, so `auto` scores at budget / 2):
- a staged step's in-graph scores ("skv_scores-<il>") equal, per layer and KV head, the query group's summed
  pre-RoPE queries rotated to the distance, dotted with each sentence's content vector (the mean of its pre-RoPE
  keys), all computed in NumPy from the model's own Q and K; `real` gives the paper's post-RoPE scores instead, and
  the two differ (so the check can fail);
- the seed a dense prefill leaves is the last token's query rotated to the distance;
- `auto` resolves to budget / 2 in a context longer than the trained length (or with remapping on) and to real
  otherwise; an explicit distance is taken as given; switching between real and fixed recomputes the vectors.
"""

from __future__ import annotations

import numpy as np
import pytest
import remap_model
from eval_capture import Capture, LowLevelContext

from engine.native import SkvContext
from engine.params import SCORE_AUTO, SCORE_REAL, Policy, Remap, SkvParams

BUDGET = 160
N_PREFILL = 600
CFG, SINK, RING = remap_model.CFG, 8, 16
rope, _ends = remap_model.rope, remap_model.sentence_ends


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return remap_model.write_model(tmp_path_factory)


class Run:
    """A tiny-model context prefilled densely (ubatches of 256 below the trained length: no sparse chunk) with
    every layer's pre-RoPE Q and K captured and the scores of each staged step."""

    def __init__(self, path, n_ctx: int, params: SkvParams, n_prefill: int = N_PREFILL):
        layers = range(CFG.n_layer)
        names = {f"{x}-{il}" for x in ("Qcur", "Kcur", "skv_scores", "skv_q_last") for il in layers}
        self.cap = Capture(want=lambda n: n in names, read_data=lambda n, op: n in names)
        self.ctx = LowLevelContext(path, n_ctx, self.cap, skv=params, n_threads=1)
        self.skv = SkvContext(self.ctx.ctx)
        rng = np.random.default_rng(5)
        self.tokens = rng.integers(100, 30000, n_ctx).tolist()
        self.skv.add_boundaries(_ends(rng, n_ctx))
        self.Kpre = np.zeros((CFG.n_layer, n_ctx, CFG.n_head_kv, CFG.head_dim))
        self.K = np.zeros_like(self.Kpre)
        self.last: dict = {}
        for p0 in range(0, n_prefill, 256):
            self.last = self.store(self.ctx.decode(self.tokens[p0 : min(p0 + 256, n_prefill)]), p0)
        self.p = n_prefill

    def store(self, rec: dict, p0: int) -> dict:
        d, f = rec["data"], rec["first"]
        for il in range(CFG.n_layer):
            n = d[f"Kcur-{il}"][0].shape[0]
            self.Kpre[il, p0 : p0 + n] = f[f"Kcur-{il}"].reshape(n, CFG.n_head_kv, CFG.head_dim)
            self.K[il, p0 : p0 + n] = d[f"Kcur-{il}"][0].astype(np.float16)
        return rec

    def step(self) -> dict:
        rec = self.store(self.ctx.decode([self.tokens[self.p]]), self.p)
        self.p += 1
        return rec

    def close(self) -> None:
        self.ctx.close()


def _qpre(rec: dict, il: int) -> np.ndarray:
    """The last token's pre-RoPE queries of layer il: [n_head, hd]."""
    q = rec["first"][f"Qcur-{il}"]
    return q.reshape(-1, CFG.n_head, CFG.head_dim)[-1].astype(np.float64)


def _expected(r: Run, rec: dict, il: int, p: int, dist: int) -> np.ndarray:
    """[n_head_kv, n_sent] scores: fixed distance (dist > 0) from pre-RoPE Q and K, else real (post-RoPE)."""
    sents = r.skv.sentences()
    gqa = CFG.n_head // CFG.n_head_kv
    q = _qpre(rec, il)
    q = rope(q, np.full(CFG.n_head, dist if dist > 0 else p))  # at the distance (content) or at p (real)
    keys = r.Kpre[il] if dist > 0 else r.K[il]
    out = np.zeros((CFG.n_head_kv, len(sents)))
    for h in range(CFG.n_head_kv):
        qs = q[h * gqa : (h + 1) * gqa].sum(axis=0)
        vec = np.stack([keys[a:b, h].mean(axis=0) for a, b in sents]).astype(np.float16).astype(np.float64)
        out[h] = vec @ qs
    return out


def _got(rec: dict, il: int, n_sent: int) -> np.ndarray:
    sc = rec["data"][f"skv_scores-{il}"].reshape(CFG.n_head_kv, -1)
    return sc[:, :n_sent].astype(np.float64)


@pytest.mark.parametrize("dist", [SCORE_AUTO, 40, SCORE_REAL])
def test_step_scores_are_at_the_fixed_distance(model, dist):
    r = Run(model, 1024, SkvParams(Policy.SENTENCE, BUDGET, SINK, RING, score_distance=dist))
    want_d = BUDGET // 2 if dist == SCORE_AUTO else dist
    worst, margin = 0.0, np.inf
    try:
        for _ in range(4):
            p = r.p
            rec = r.step()
            assert r.skv.stats().score_distance == want_d
            n_sent = len(r.skv.sentences())
            for il in range(CFG.n_layer):
                got = _got(rec, il, n_sent)
                want = _expected(r, rec, il, p, want_d)
                scale = max(1.0, float(np.abs(want).max()))
                err = float(np.abs(got - want).max()) / scale
                worst = max(worst, err)
                assert err <= 5e-3, (p, il, err)
                other = _expected(r, rec, il, p, 0 if want_d else BUDGET // 2)
                margin = min(margin, float(np.abs(got - other).max()) / scale)
    finally:
        r.close()
    assert margin > 10 * max(worst, 1e-4), (margin, worst)  # real and fixed scores are told apart


def test_prefill_seed_is_the_last_query_at_the_distance(model):
    r = Run(model, 1024, SkvParams(Policy.SENTENCE, BUDGET, SINK, RING), n_prefill=500)  # dense: below 512
    try:
        seed = np.frombuffer(r.skv.query_seed(), np.float32).reshape(CFG.n_layer, CFG.n_head, CFG.head_dim)
        kq_scale = 1.0 / np.sqrt(CFG.head_dim)
        for il in range(CFG.n_layer):
            want = rope(_qpre(r.last, il), np.full(CFG.n_head, BUDGET // 2)) * kq_scale
            assert np.abs(seed[il] - want).max() <= 2e-3 * max(1.0, float(np.abs(want).max())), il
    finally:
        r.close()


def test_auto_follows_remapping_and_switching_recomputes_the_vectors(model):
    small = Run(model, 512, SkvParams(Policy.SENTENCE, BUDGET, SINK, RING), n_prefill=300)
    try:
        small.step()
        assert small.skv.stats().score_distance == 0  # a context inside the trained length: real distances
        small.skv.set_params(SkvParams(Policy.SENTENCE, BUDGET, SINK, RING, remap=Remap.ON))
        assert small.skv.stats().score_distance == BUDGET // 2  # remapping forced on: fixed
    finally:
        small.close()
    r = Run(model, 1024, SkvParams(Policy.SENTENCE, BUDGET, SINK, RING, remap=Remap.OFF))
    try:
        r.step()
        assert r.skv.stats().score_distance == 0  # remapping off: real distances even past the trained length
        for dist, want_d in ((SCORE_AUTO, BUDGET // 2), (SCORE_REAL, 0), (64, 64)):
            r.skv.set_params(SkvParams(Policy.SENTENCE, BUDGET, SINK, RING, score_distance=dist))
            p = r.p
            rec = r.step()
            assert r.skv.stats().score_distance == want_d
            n_sent = len(r.skv.sentences())
            for il in range(CFG.n_layer):
                want = _expected(r, rec, il, p, want_d)
                err = np.abs(_got(rec, il, n_sent) - want).max() / max(1.0, float(np.abs(want).max()))
                assert err <= 5e-3, (dist, il, err)
    finally:
        r.close()
