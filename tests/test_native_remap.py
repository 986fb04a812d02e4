"""Issue 15: positions past the trained length. A remapped staged step gives the attended tokens of each head the
virtual positions 0..n-1 in order and the query n (native/README.md, "Positions past the trained length"); the cache
stores post-RoPE keys, so each staged row is turned by its RoPE delta in-graph ("skv_k_rot-<il>").

Checked on the tiny model (trained to 512 tokens here, so `auto` switches on inside a small context):
- every staged K row after its delta rotation equals the model's own pre-RoPE K of that token rotated in NumPy to
  the token's virtual position, each attended token in exactly one slot (the NumPy RoPE itself checked against the
  model's RoPE at the original positions);
- the step's attention output equals NumPy attention over the selected tokens at their virtual positions, and
  differs from the same tokens at their original positions (so the check can fail);
- `auto` switches at the trained length, `off` never remaps, and `on` with a budget covering the context gives the
  dense logits (every delta is 0);
- stats: positions_remapped, max_position (<= the budget when remapped);
- the STACK layout: every retrieved sentence ends right before the open sentence and the ring (all at one distance
  from the query); the step's output equals NumPy attention at those virtual positions, not at ORDER's.
"""

from __future__ import annotations

import numpy as np
import pytest
import remap_model
from attention import attend as _attend
from attention import attended as _attended
from eval_capture import Capture, LowLevelContext

from engine.native import SkvContext
from engine.params import Layout, Policy, Remap, SkvParams

CFG, BUDGET, SINK, RING, N_CTX, TOL = remap_model.CFG, 160, 8, 16, 1024, 5e-3
rope, _ends = remap_model.rope, remap_model.sentence_ends


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return remap_model.write_model(tmp_path_factory)


class Run:
    """A tiny-model context with every layer's Q/K/V (pre-RoPE K too), the staged rotation and the output captured."""

    def __init__(
        self, path, remap: Remap, n_prefill: int, budget: int = BUDGET, layout: Layout = Layout.ORDER
    ):
        names = {
            f"{x}-{il}"
            for x in ("Qcur", "Kcur", "Vcur", "kqv_out", "skv_k_rot", "skv_k_shift")
            for il in range(CFG.n_layer)
        }
        self.cap = Capture(want=lambda n: n in names, read_data=lambda n, op: n in names)
        self.budget = budget
        self.ctx = LowLevelContext(
            path, N_CTX, self.cap, skv=SkvParams(Policy.FULL, budget, SINK, RING), n_threads=1
        )
        self.skv = SkvContext(self.ctx.ctx)
        rng = np.random.default_rng(3)
        self.tokens = rng.integers(100, 30000, N_CTX).tolist()
        self.skv.add_boundaries(_ends(rng, N_CTX))
        shape = (CFG.n_layer, N_CTX, CFG.n_head_kv, CFG.head_dim)
        self.K, self.Kpre, self.V = np.zeros(shape), np.zeros(shape), np.zeros(shape)
        for p0 in range(0, n_prefill, 256):
            self.store(self.ctx.decode(self.tokens[p0 : min(p0 + 256, n_prefill)]), p0)
        self.p = n_prefill
        self.skv.set_params(SkvParams(Policy.SENTENCE, budget, SINK, RING, remap=remap, layout=layout))

    def store(self, rec: dict, p0: int) -> np.ndarray:
        d, f = rec["data"], rec["first"]
        for il in range(CFG.n_layer):
            k = d[f"Kcur-{il}"][0]  # [n_tok, n_kv, hd] after RoPE, rounded to F16 as the cache stores it
            n = k.shape[0]
            self.K[il, p0 : p0 + n] = k.astype(np.float16)
            self.Kpre[il, p0 : p0 + n] = f[f"Kcur-{il}"].reshape(n, CFG.n_head_kv, CFG.head_dim)
            self.V[il, p0 : p0 + n] = d[f"Vcur-{il}"][0].reshape(k.shape).astype(np.float16)
        return np.stack([d[f"Qcur-{il}"][0] for il in range(CFG.n_layer)])  # [n_layer, n_tok, n_head, hd]

    def step(self) -> tuple[dict, np.ndarray]:
        rec = self.ctx.decode([self.tokens[self.p]])
        q = self.store(rec, self.p)[:, 0]
        self.p += 1
        return rec, q

    def attended(self, il: int, p: int, picks: bool = False) -> list:
        sents = self.skv.sentences()
        open_start = max([b for _, b in sents if b <= p], default=0)
        out = [
            _attended(self.skv, sents, il, h, p, self.budget, SINK, RING, open_start)
            for h in range(CFG.n_head_kv)
        ]
        return out if picks else [pos for pos, _ in out]

    def close(self) -> None:
        self.ctx.close()


def test_numpy_rope_is_the_models_rope(model):
    r = Run(model, Remap.OFF, 300)
    try:
        for il in range(CFG.n_layer):
            for h in range(CFG.n_head_kv):
                want = rope(r.Kpre[il, :300, h], np.arange(300))
                assert np.abs(r.K[il, :300, h] - want).max() <= 2e-3 * max(1.0, np.abs(want).max())
    finally:
        r.close()


def test_a_staged_row_after_its_delta_equals_k_at_the_virtual_position(model):
    r = Run(model, Remap.ON, 700)
    checked = 0
    try:
        for _ in range(6):
            p = r.p
            rec, _ = r.step()
            st = r.skv.stats()
            assert st.positions_remapped and st.max_position == st.attended_last - 1 < BUDGET
            for il in range(CFG.n_layer):
                rot = rec["data"][f"skv_k_rot-{il}"].reshape(-1, CFG.n_head_kv, CFG.head_dim)
                for h, pos in enumerate(r.attended(il, p)):
                    n = len(pos) - 1  # slots [0, n) hold pos[:n] in some order, slot n the current token p
                    virt = p - n + np.arange(n + 1)  # pos[r] is seen at distance n - r from the query (at p)
                    want = rope(r.Kpre[il, pos, h], virt)  # K of each attended token at its virtual position
                    scale = max(1.0, float(np.abs(want).max()))
                    # each slot's rotated row is one attended token's K at its virtual position, each token once
                    err = np.abs(rot[: n + 1, h][:, None, :] - want[None, :, :]).max(axis=2)  # [slot, token]
                    j = err.argmin(axis=1)
                    assert sorted(j.tolist()) == list(range(n + 1)), (p, il, h)
                    assert err[np.arange(n + 1), j].max() <= 4e-3 * scale, (p, il, h)
                    assert j[n] == n  # the current token in slot n, at its own position (delta 0)
                    # and the rotation moved them: at their stored positions the rows are far off
                    sink = j < min(SINK, n)
                    assert np.abs(rot[: n + 1, h][sink] - r.K[il, pos[j[sink]], h]).max() > 50 * 4e-3 * scale
                    checked += n + 1
    finally:
        r.close()
    assert checked > 6 * CFG.n_layer * CFG.n_head_kv * (SINK + RING)


def test_remapped_attention_output_is_attention_at_the_virtual_positions(model):
    r = Run(model, Remap.ON, 700)
    gqa = CFG.n_head // CFG.n_head_kv
    worst, margin = 0.0, np.inf
    try:
        for _ in range(8):
            p = r.p
            rec, q = r.step()
            for il in range(CFG.n_layer):
                got = rec["data"][f"kqv_out-{il}"][0, 0].reshape(CFG.n_head, -1).astype(np.float64)
                pos = r.attended(il, p)  # ascending, the current token p last
                n = len(pos[0]) - 1
                Kv = np.zeros_like(r.K[il])  # keys at their virtual positions, per head
                for h in range(CFG.n_head_kv):
                    Kv[pos[h], h] = rope(r.Kpre[il, pos[h], h], p - n + np.arange(n + 1)).astype(np.float16)
                want = _attend(q[il], Kv, r.V[il], pos, gqa)
                err = float(np.abs(got - want).max())
                worst = max(worst, err)
                assert err <= TOL * max(1.0, float(np.abs(want).max())), (p, il, err)
                # the same tokens at their own positions give another output
                margin = min(margin, float(np.abs(got - _attend(q[il], r.K[il], r.V[il], pos, gqa)).max()))
    finally:
        r.close()
    assert margin > 5 * max(worst, 1e-6), (margin, worst)


def test_auto_remaps_from_the_trained_length_and_off_never(model):
    r = Run(model, Remap.AUTO, 300)
    try:
        r.step()
        st = r.skv.stats()
        assert not st.positions_remapped and st.max_position == 300
        r.ctx.decode(r.tokens[r.p : 520])  # dense (policy sentence decodes one token at a time only)
        r.p = 520
        r.step()
        st = r.skv.stats()
        assert st.positions_remapped and st.max_position == st.attended_last - 1 < CFG.n_ctx_train
        r.skv.set_params(SkvParams(Policy.SENTENCE, BUDGET, SINK, RING, remap=Remap.OFF))
        r.step()
        st = r.skv.stats()
        assert not st.positions_remapped and st.max_position == 521
    finally:
        r.close()


def test_remap_on_with_a_budget_covering_the_context_is_dense(model):
    outs = {}
    for remap in (Remap.OFF, Remap.ON):
        r = Run(model, remap, 400, budget=1024)
        try:
            r.skv.set_params(SkvParams(Policy.FULL, 1024, SINK, RING))
            r.ctx.decode([r.tokens[400]])
            dense = r.ctx.logits()
            r.ctx.close()
        finally:
            r.close()
        r = Run(model, remap, 400, budget=1024)
        try:
            rec, _ = r.step()
            assert r.skv.stats().positions_remapped == (remap == Remap.ON)
            assert ("skv_k_rot-0" in rec["data"]) == (remap == Remap.ON)
            outs[remap] = (dense, r.ctx.logits())
        finally:
            r.close()
    for dense, staged in outs.values():
        assert np.abs(dense - staged).max() <= 0.02
    assert np.array_equal(outs[Remap.OFF][1], outs[Remap.ON][1])


def _expect(
    r: Run, q: np.ndarray, il: int, ctx_pos: list[np.ndarray], p0: int, own: np.ndarray
) -> np.ndarray:
    """NumPy attention of one query (q [n_head, hd]) over each head's context ctx_pos (ascending, at virtual positions:
    the key of ctx_pos[r] turned to p0 - n + r) and the ubatch's own tokens `own` (at their stored positions)."""
    gqa = CFG.n_head // CFG.n_head_kv
    Kv = r.K[il].copy()
    pos = []
    for h, cp in enumerate(ctx_pos):
        n = len(cp)
        Kv[cp, h] = rope(r.Kpre[il, cp, h], p0 - n + np.arange(n)).astype(np.float16)
        pos.append(np.concatenate([cp, own]))
    return _attend(q, Kv, r.V[il], pos, gqa)


def test_sparse_prefill_chunk_past_the_trained_length_is_attention_over_the_selected_tokens(model):
    """A prefill chunk reaching past the trained length attends sink + its sentences + the ring before it, then its
    own tokens causally, at virtual positions; the decode steps after it as well."""
    r = Run(model, Remap.AUTO, 512)  # [0, 512): dense (it ends at the trained length)
    m = 96
    worst, margin = 0.0, np.inf
    try:
        before = r.skv.stats()
        p0 = r.p
        rec = r.ctx.decode(r.tokens[p0 : p0 + m])
        q = r.store(rec, p0)
        r.p += m
        st = r.skv.stats()
        assert st.n_skv_steps == before.n_skv_steps + 1 and st.n_dense_steps == before.n_dense_steps
        assert st.positions_remapped and st.max_position == st.attended_last - 1 < BUDGET + m
        for il in range(CFG.n_layer):
            ctx_pos = [
                x[:-1] for x in r.attended(il, p0)
            ]  # the context of a step at p0 (p0 itself is the chunk's)
            assert len(ctx_pos[0]) + m == st.attended_last
            out = rec["data"][f"kqv_out-{il}"][0, 0].reshape(m, CFG.n_head, -1).astype(np.float64)
            for j in range(0, m, 7):
                own = np.arange(p0, p0 + j + 1)
                want = _expect(r, q[il, j], il, ctx_pos, p0, own)
                err = float(np.abs(out[j] - want).max())
                worst = max(worst, err)
                assert err <= TOL * max(1.0, float(np.abs(want).max())), (il, j, err)
                dense = _attend(
                    q[il, j],
                    r.K[il],
                    r.V[il],
                    [np.arange(p0 + j + 1)] * CFG.n_head_kv,
                    CFG.n_head // CFG.n_head_kv,
                )
                margin = min(margin, float(np.abs(out[j] - dense).max()))
        # the decode steps after the sparse chunk
        for _ in range(3):
            p = r.p
            rec, qd = r.step()
            for il in range(CFG.n_layer):
                ctx_pos = [x[:-1] for x in r.attended(il, p)]
                got = rec["data"][f"kqv_out-{il}"][0, 0].reshape(CFG.n_head, -1).astype(np.float64)
                want = _expect(r, qd[il], il, ctx_pos, p, np.array([p]))
                err = float(np.abs(got - want).max())
                worst = max(worst, err)
                assert err <= TOL * max(1.0, float(np.abs(want).max())), (p, il, err)
    finally:
        r.close()
    assert margin > 5 * max(worst, 1e-6), (margin, worst)


def test_prefill_stays_dense_below_the_trained_length_and_with_remap_off(model):
    for remap, p0, dense in ((Remap.AUTO, 256, True), (Remap.OFF, 512, True), (Remap.AUTO, 512, False)):
        r = Run(model, Remap.AUTO, p0)
        try:
            r.skv.set_params(SkvParams(Policy.SENTENCE, BUDGET, SINK, RING, remap=remap))
            before = r.skv.stats()
            r.ctx.decode(r.tokens[p0 : p0 + 200])
            st = r.skv.stats()
            assert (st.n_dense_steps - before.n_dense_steps, st.n_skv_steps - before.n_skv_steps) == (
                (1, 0) if dense else (0, 1)
            ), (remap, p0)
            assert st.max_position == (p0 + 199 if dense else st.attended_last - 1)
        finally:
            r.close()


def stack_ranks(pos: np.ndarray, picks: list[tuple[int, int]], p: int) -> np.ndarray:
    """The STACK layout's virtual rank of each attended position (ascending, the current token p last): the sink
    first, each retrieved run [a, b) ending at rank n_sink + w - 1 (w: the longest run), then the open sentence, the
    ring and the current token consecutively."""
    n_sink = min(SINK, p)
    w = max((b - a for a, b in picks), default=0)
    run_of = {t: b for a, b in picks for t in range(a, b)}
    tail = [t for t in pos if t >= n_sink and t not in run_of]
    ranks = [
        t if t < n_sink else n_sink + w - (run_of[t] - t) if t in run_of else n_sink + w + tail.index(t)
        for t in pos
    ]
    return np.array(ranks)


def test_stack_layout_puts_every_retrieved_sentence_at_one_distance(model):
    r = Run(model, Remap.ON, 700, layout=Layout.STACK)
    gqa = CFG.n_head // CFG.n_head_kv
    worst, margin, stacked = 0.0, np.inf, 0
    try:
        for _ in range(8):
            p = r.p
            rec, q = r.step()
            st = r.skv.stats()
            n_q_max = 0
            for il in range(CFG.n_layer):
                got = rec["data"][f"kqv_out-{il}"][0, 0].reshape(CFG.n_head, -1).astype(np.float64)
                heads = r.attended(il, p, picks=True)
                Kv, Ko = np.zeros_like(r.K[il]), np.zeros_like(r.K[il])
                for h, (pos, picks) in enumerate(heads):
                    ranks = stack_ranks(pos, picks, p)
                    n_q = int(ranks[-1])  # the current token's rank is the query's
                    n_q_max = max(n_q_max, n_q)
                    stacked += len(picks) > 1 and n_q < len(pos) - 1
                    Kv[pos, h] = rope(r.Kpre[il, pos, h], p - n_q + ranks).astype(np.float16)
                    n = len(pos) - 1
                    Ko[pos, h] = rope(r.Kpre[il, pos, h], p - n + np.arange(n + 1)).astype(np.float16)
                pos = [x for x, _ in heads]
                want = _attend(q[il], Kv, r.V[il], pos, gqa)
                err = float(np.abs(got - want).max())
                worst = max(worst, err)
                assert err <= TOL * max(1.0, float(np.abs(want).max())), (p, il, err)
                # ORDER's virtual positions give another output
                margin = min(margin, float(np.abs(got - _attend(q[il], Ko, r.V[il], pos, gqa)).max()))
            assert st.positions_remapped and st.max_position == n_q_max < st.attended_last - 1
    finally:
        r.close()
    assert stacked > 0
    assert margin > 5 * max(worst, 1e-6), (margin, worst)
