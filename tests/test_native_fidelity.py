"""The fidelity levers and the oracle (native/README.md, "Fidelity levers") against NumPy on the tiny random llama.

Every check reads the raw post-RoPE Q and K llama.cpp hands to the eval callback (never the native vectors or
scores) and the native's reported selections:
- oracle tokens: each (layer, KV head) attends the tokens of [sink, ring_start) with the most attention of the
  step (softmax of q_j . k_t / sqrt(d) per query head j of the group, summed), reported per entry;
- GQA max / heads at the first step after a prefill (the seed: the last prefilled token's queries, scored on the
  host): the order of the entries that got tokens follows the largest per-query-head score, or the rank-by-rank
  merge of the query heads' own orders;
- query last: the first entry each head attends is the best under the previous step's scores alone;
- the bound summary (Quest): switched on after a mean prefill, the first entry each head attends is the best
  under sum_j (q_j . c + |q_j| . r) of the previous step's queries, c and r each dimension's centre and half range
  over the entry's keys; switched back, the mean's order returns;
- dense layers: a dense layer's attention output equals `full`'s bit for bit, the layers after it attend only
  the budget; edge skip takes whole entries only (one cut at the end); neighbours bring the entries around each one.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from attention import attend, attended
from eval_capture import Capture, LowLevelContext
from tiny_gguf import TinyConfig

from engine.native import SkvContext, params_from_c, params_to_c
from engine.params import Edge, Gqa, Oracle, Policy, QueryMode, SelectAt, SkvParams, Summary

CFG = TinyConfig()
N_CTX = 1024
N_PREFILL = 700
SINK, RING, BUDGET = 8, 16, 200


def _ends(seed: int, n: int) -> list[int]:
    rng = np.random.default_rng(seed)
    out, e = [], 0
    while True:
        e += int(rng.integers(3, 30))
        if e >= n:
            return out
        out.append(e)


class Run:
    """A tiny-model context, prefilled densely, with every layer's post-RoPE Q and K (and layer outputs) captured."""

    def __init__(self, path, params: SkvParams, extra: tuple[str, ...] = ()) -> None:
        names = {f"{x}-{il}" for x in ("Qcur", "Kcur", *extra) for il in range(CFG.n_layer)}
        self.cap = Capture(
            want=lambda n: n in names,
            read_data=lambda n, op: n in names and (op == "ROPE" or not n.startswith(("Q", "K"))),
        )
        self.ctx = LowLevelContext(path, N_CTX, self.cap, skv=params, n_threads=1)
        self.skv = SkvContext(self.ctx.ctx)
        rng = np.random.default_rng(5)
        self.tokens = rng.integers(100, 30000, N_CTX).tolist()
        self.skv.add_boundaries(_ends(6, N_CTX))
        self.K = np.zeros(
            (CFG.n_layer, N_CTX, CFG.n_head_kv, CFG.head_dim), np.float32
        )  # as the F16 cache holds it
        self.V = np.zeros_like(self.K) if "Vcur" in extra else None
        self.q_seed = None
        p = 0
        while p < N_PREFILL:
            n = min(512, N_PREFILL - p)
            rec = self.ctx.decode(self.tokens[p : p + n])
            self._store(p, rec)
            self.q_seed = self._q(rec)[:, -1]
            p += n

    def _q(self, rec) -> np.ndarray:  # [n_layer, n_tokens, n_head, hd]
        return np.stack([rec["data"][f"Qcur-{il}"][0] for il in range(CFG.n_layer)]).astype(np.float64)

    def _store(self, p: int, rec) -> None:
        k = np.stack([rec["data"][f"Kcur-{il}"][0] for il in range(CFG.n_layer)])
        self.K[:, p : p + k.shape[1]] = k.astype(np.float16).astype(np.float32)
        if self.V is not None:
            v = np.stack([rec["data"][f"Vcur-{il}"][0] for il in range(CFG.n_layer)])
            self.V[:, p : p + v.shape[1]] = v.reshape(self.V[:, p : p + v.shape[1]].shape).astype(np.float16)

    def step(self, p: int):
        rec = self.ctx.decode([self.tokens[p]])
        self._store(p, rec)
        return rec

    def redo(self, p: int) -> None:
        """Remove position p from the cache (the next step decodes it again)."""
        ll = self.ctx.ll
        ll.llama_memory_seq_rm(ll.llama_get_memory(self.ctx.ctx), 0, p, -1)
        self.ctx.n_past = p

    def vectors(self, il: int, exclude_sink: bool = False, sink: int = SINK) -> np.ndarray:
        """[n_sent, n_kv, hd]: the mean of each closed sentence's K rows, rounded to F16 (as the device holds it);
        exclude_sink: without the rows inside the sink (unless the sentence has no other)."""
        out = []
        for a, b in self.skv.sentences():
            if exclude_sink and b > sink:
                a = max(a, sink)
            s = self.K[il, a:b].sum(axis=0, dtype=np.float32) * np.float32(1.0 / (b - a))
            out.append(s.astype(np.float16).astype(np.float64))
        return np.stack(out)

    def bounds(self, il: int) -> tuple[np.ndarray, np.ndarray]:
        """[n_sent, n_kv, hd] twice: each dimension's centre and half range over a sentence's K rows (F16)."""
        c, r = [], []
        for a, b in self.skv.sentences():
            lo, hi = self.K[il, a:b].min(axis=0), self.K[il, a:b].max(axis=0)
            c.append((np.float32(0.5) * (hi + lo)).astype(np.float16).astype(np.float64))
            r.append((np.float32(0.5) * (hi - lo)).astype(np.float16).astype(np.float64))
        return np.stack(c), np.stack(r)

    def head_scores(
        self, il: int, q: np.ndarray, bound: bool = False, exclude_sink: bool = False
    ) -> np.ndarray:
        """[n_head, n_sent]: each query head's (unsummed) score of every sentence."""
        g = CFG.n_head // CFG.n_head_kv
        if bound:
            c, r = self.bounds(il)
            return np.stack(
                [c[:, j // g] @ q[j] + r[:, j // g] @ np.abs(q[j]) for j in range(CFG.n_head)]
            ) / np.sqrt(CFG.head_dim)
        v = self.vectors(il, exclude_sink)
        return np.stack([v[:, j // g] @ q[j] for j in range(CFG.n_head)]) / np.sqrt(CFG.head_dim)

    def has_tokens(self, p: int) -> list[bool]:
        ring_start = max(SINK, p - RING + 1)
        return [min(b, ring_start) > max(a, SINK) for a, b in self.skv.sentences()]

    def close(self) -> None:
        self.ctx.close()


def _picks(skv: SkvContext, il: int, h: int) -> list[tuple[int, int]]:
    return [(pk.entry, pk.n_tokens) for pk in skv.selection(il, h)]


def _gap_ok(order_scores: list[float], i: int, tol: float) -> bool:
    """Entries i and i + 1 of a reference order are apart by more than tol (their order is decided)."""
    return abs(order_scores[i] - order_scores[i + 1]) > tol


def test_oracle_tokens_attend_the_most_attended_tokens(tiny_model_path):
    params = SkvParams(Policy.SENTENCE, BUDGET, SINK, RING, oracle=Oracle.TOKENS)
    r = Run(tiny_model_path, params)
    try:
        n_slot = BUDGET - SINK - RING
        g = CFG.n_head // CFG.n_head_kv
        checked = 0
        for p in range(N_PREFILL, N_PREFILL + 6):
            r.skv.set_params(replace(params, policy=Policy.FULL))
            q = r._q(r.step(p))[:, 0]  # the dense pass: the step's own queries
            r.redo(p)
            r.skv.set_params(params)
            r.step(p)
            ring_start = max(SINK, p - RING + 1)
            spans = r.skv.sentences()
            for il in range(CFG.n_layer):
                for h in range(CFG.n_head_kv):
                    k = r.K[il, :p, h].astype(np.float64)
                    w = np.zeros(p)
                    for j in range(h * g, (h + 1) * g):
                        z = k @ q[il, j] / np.sqrt(CFG.head_dim)
                        e = np.exp(z - z.max())
                        w += e / e.sum()
                    cand = np.arange(SINK, ring_start)
                    top = cand[np.argsort(-w[cand], kind="stable")]
                    chosen, rest = top[:n_slot], top[n_slot:]
                    want: dict[int, int] = {}
                    for t in chosen:
                        sid = next((i for i, (a, b) in enumerate(spans) if a <= t < b), None)
                        if sid is not None:
                            want[sid] = want.get(sid, 0) + 1
                    got = dict(_picks(r.skv, il, h))
                    if got != want:
                        # only a near tie at the cut may swap a token
                        assert len(rest) and abs(w[chosen[-1]] - w[rest[0]]) < 1e-4 * w[chosen[-1]], (
                            p,
                            il,
                            h,
                        )
                    else:
                        checked += 1
        assert checked >= 0.9 * 6 * CFG.n_layer * CFG.n_head_kv
        assert r.skv.stats().attended_last == BUDGET
    finally:
        r.close()


@pytest.mark.parametrize("gqa", [Gqa.MAX, Gqa.HEADS])
def test_gqa_aggregation_at_the_seed_step(tiny_model_path, gqa):
    params = SkvParams(Policy.SENTENCE, BUDGET, SINK, RING, gqa=gqa)
    r = Run(tiny_model_path, params)
    try:
        p = N_PREFILL
        r.step(p)
        has = r.has_tokens(p)
        g = CFG.n_head // CFG.n_head_kv
        for il in range(CFG.n_layer):
            sc = r.head_scores(il, r.q_seed[il])  # [n_head, n_sent]
            n = sc.shape[1]
            for h in range(CFG.n_head_kv):
                grp = sc[h * g : (h + 1) * g]
                if gqa == Gqa.MAX:
                    key = grp.max(axis=0)
                else:  # rank by rank over the group's query heads: -(rank * g + head) of the earliest turn
                    key = np.full(n, -np.inf)
                    for j in range(g):
                        order = np.argsort(-grp[j], kind="stable")
                        key[order] = np.maximum(key[order], -(np.arange(n) * g + j))
                order = [i for i in np.argsort(-key, kind="stable") if has[i]]
                got = [e for e, _ in _picks(r.skv, il, h)]
                assert len(got) >= 3
                ks = [key[i] for i in order]
                tol = 1e-4 if gqa == Gqa.MAX else 0.5
                for i, e in enumerate(got[:-1]):  # the last one may be cut: still in order
                    if i + 1 < len(order) and (i == 0 or _gap_ok(ks, i - 1, tol)) and _gap_ok(ks, i, tol):
                        assert e == order[i], (il, h, i, got[:6], order[:6])
        # the sum (today's default) orders differently somewhere: the aggregation is not a no-op
        assert r.skv.get_params().gqa == gqa
    finally:
        r.close()


def test_query_last_selects_from_the_previous_step_alone(tiny_model_path):
    params = SkvParams(Policy.SENTENCE, BUDGET, SINK, RING, query=QueryMode.LAST)
    r = Run(tiny_model_path, params)
    try:
        prev_q = None
        n_checked = 0
        for p in range(N_PREFILL, N_PREFILL + 8):
            n_before = len(r.skv.sentences())
            rec = r.step(p)
            if prev_q is not None and len(r.skv.sentences()) == n_before:
                has = r.has_tokens(p)
                for il in range(CFG.n_layer):
                    sc = r.head_scores(il, prev_q[il])[:, :n_before]
                    g = CFG.n_head // CFG.n_head_kv
                    for h in range(CFG.n_head_kv):
                        s = sc[h * g : (h + 1) * g].sum(axis=0)
                        order = [i for i in np.argsort(-s, kind="stable") if has[i]]
                        first = _picks(r.skv, il, h)[0][0]
                        if s[order[0]] - s[order[1]] > 1e-3 * abs(s[order[0]]):
                            assert first == order[0], (p, il, h)
                            n_checked += 1
            prev_q = r._q(rec)[:, 0]
        assert n_checked >= 8
    finally:
        r.close()


def test_select_at_step_chooses_from_the_steps_own_query_before_its_attention(tiny_model_path):
    """select_at=step: each layer's choice comes from the query of the step itself (not the step before), and the
    layer's attention output is attention over the tokens of that choice (the rows were placed before it ran);
    decoding the same step under the lag gives another choice and another output."""
    params = SkvParams(Policy.SENTENCE, BUDGET, SINK, RING, select_at=SelectAt.STEP)
    r = Run(tiny_model_path, params, extra=("Vcur", "kqv_out"))
    g = CFG.n_head // CFG.n_head_kv
    n_first = n_out = n_differs = 0
    try:
        for p in range(N_PREFILL, N_PREFILL + 8):
            r.skv.set_params(replace(params, select_at=SelectAt.LAG))
            lag = r.step(p)
            lag_picks = [[_picks(r.skv, il, h) for h in range(CFG.n_head_kv)] for il in range(CFG.n_layer)]
            r.redo(p)
            r.skv.set_params(params)
            n_before = len(r.skv.sentences())
            rec = r.step(p)
            q = r._q(rec)[:, 0]
            spans = r.skv.sentences()
            open_start = max([b for _, b in spans if b <= p], default=0)
            for il in range(CFG.n_layer):
                if len(spans) == n_before:
                    has = r.has_tokens(p)
                    sc = r.head_scores(il, q[il])[:, :n_before]
                    for h in range(CFG.n_head_kv):
                        s = sc[h * g : (h + 1) * g].sum(axis=0)
                        order = [i for i in np.argsort(-s, kind="stable") if has[i]]
                        if s[order[0]] - s[order[1]] > 1e-3 * abs(s[order[0]]):
                            assert _picks(r.skv, il, h)[0][0] == order[0], (p, il, h)
                            n_first += 1
                pos = [
                    attended(r.skv, spans, il, h, p, BUDGET, SINK, RING, open_start)[0]
                    for h in range(CFG.n_head_kv)
                ]
                want = attend(q[il], r.K[il], r.V[il], pos, g)
                got = rec["data"][f"kqv_out-{il}"][0, 0].reshape(CFG.n_head, -1).astype(np.float64)
                assert np.abs(got - want).max() <= 5e-3 * max(1.0, float(np.abs(want).max())), (p, il)
                n_out += 1
                now_picks = [_picks(r.skv, il, h) for h in range(CFG.n_head_kv)]
                if now_picks != lag_picks[il]:
                    before = lag["data"][f"kqv_out-{il}"][0, 0].reshape(CFG.n_head, -1)
                    assert not np.allclose(got, before), (p, il)
                    n_differs += 1
        assert n_first >= 8 and n_out == 8 * CFG.n_layer and n_differs >= 4, (n_first, n_differs)
    finally:
        r.close()


def test_bound_summary_scores_like_quest_and_switches_at_run_time(tiny_model_path):
    params = SkvParams(Policy.SENTENCE, BUDGET, SINK, RING, query=QueryMode.LAST)
    r = Run(tiny_model_path, params)
    try:
        mean_bytes = r.skv.stats().device_vec_bytes
        g = CFG.n_head // CFG.n_head_kv
        checked = {True: 0, False: 0}
        differs = 0
        prev_q = None
        for p in range(N_PREFILL, N_PREFILL + 14):
            bound = p < N_PREFILL + 8  # bound for 8 steps, then the mean again
            r.skv.set_params(replace(params, summary=Summary.BOUND if bound else Summary.MEAN))
            n_before = len(r.skv.sentences())
            rec = r.step(p)
            if bound:
                assert r.skv.stats().device_vec_bytes == 2 * mean_bytes  # (c, r) per entry and head
            if (
                prev_q is not None
                and len(r.skv.sentences()) == n_before
                and p not in (N_PREFILL, N_PREFILL + 8)
            ):
                has = r.has_tokens(p)
                for il in range(CFG.n_layer):
                    sc = r.head_scores(il, prev_q[il], bound)[:, :n_before]
                    other = r.head_scores(il, prev_q[il], not bound)[:, :n_before]
                    for h in range(CFG.n_head_kv):
                        s = sc[h * g : (h + 1) * g].sum(axis=0)
                        o = other[h * g : (h + 1) * g].sum(axis=0)
                        order = [i for i in np.argsort(-s, kind="stable") if has[i]]
                        differs += order[0] != [i for i in np.argsort(-o, kind="stable") if has[i]][0]
                        first = _picks(r.skv, il, h)[0][0]
                        if s[order[0]] - s[order[1]] > 1e-3 * abs(s[order[0]]):
                            assert first == order[0], (p, bound, il, h)
                            checked[bound] += 1
            prev_q = r._q(rec)[:, 0]
        assert checked[True] >= 8 and checked[False] >= 4, checked
        assert differs > 0  # the two summaries choose differently somewhere: the check can tell them apart
        assert r.skv.get_params().summary == Summary.MEAN
    finally:
        r.close()


def _gauss_scores(r: Run, il: int, q: np.ndarray) -> np.ndarray:
    """[n_head, n_sent]: each query head's estimate of a sentence's log attention mass if its keys were Gaussian:
    log n + s q.m + s^2/2 q^2.s2 (s = 1/sqrt(d); m and s2 each dimension's mean and variance, rounded to F16)."""
    g = CFG.n_head // CFG.n_head_kv
    sc = 1.0 / np.sqrt(CFG.head_dim)
    out = []
    for a, b in r.skv.sentences():
        k = r.K[il, a:b]
        m = k.sum(axis=0, dtype=np.float32) * np.float32(1.0 / (b - a))
        v = np.maximum(
            np.float32(0), (k * k).sum(axis=0, dtype=np.float32) * np.float32(1.0 / (b - a)) - m * m
        )
        m, v = m.astype(np.float16).astype(np.float64), v.astype(np.float16).astype(np.float64)
        out.append(
            [
                np.log(b - a) + sc * m[j // g] @ q[j] + 0.5 * sc * sc * v[j // g] @ (q[j] ** 2)
                for j in range(CFG.n_head)
            ]
        )
    return np.array(out).T


def test_gauss_summary_scores_the_estimated_attention_mass(tiny_model_path):
    """summary=gauss (switched on after a mean prefill; query last): the first entry each head attends is the best
    under the Gaussian-mass estimate of the previous step's queries, which orders differently from the mean."""
    params = SkvParams(Policy.SENTENCE, BUDGET, SINK, RING, query=QueryMode.LAST)
    r = Run(tiny_model_path, params)
    try:
        mean_bytes = r.skv.stats().device_vec_bytes
        r.skv.set_params(replace(params, summary=Summary.GAUSS))
        g = CFG.n_head // CFG.n_head_kv
        checked = differs = 0
        prev_q = None
        for p in range(N_PREFILL, N_PREFILL + 10):
            n_before = len(r.skv.sentences())
            rec = r.step(p)
            assert r.skv.stats().device_vec_bytes == 2 * mean_bytes  # (m, s2) per entry and head
            if prev_q is not None and len(r.skv.sentences()) == n_before:
                has = r.has_tokens(p)
                for il in range(CFG.n_layer):
                    sc = _gauss_scores(r, il, prev_q[il])[:, :n_before]
                    mean = r.head_scores(il, prev_q[il])[:, :n_before]
                    for h in range(CFG.n_head_kv):
                        s = sc[h * g : (h + 1) * g].sum(axis=0)
                        o = mean[h * g : (h + 1) * g].sum(axis=0)
                        order = [i for i in np.argsort(-s, kind="stable") if has[i]]
                        differs += order[0] != [i for i in np.argsort(-o, kind="stable") if has[i]][0]
                        if s[order[0]] - s[order[1]] > 1e-3 * abs(s[order[0]]):
                            assert _picks(r.skv, il, h)[0][0] == order[0], (p, il, h)
                            checked += 1
            prev_q = r._q(rec)[:, 0]
        assert checked >= 8 and differs > 0, (checked, differs)
        assert r.skv.get_params().summary == Summary.GAUSS
    finally:
        r.close()


def test_exclude_sink_leaves_the_sinks_keys_out_of_the_vectors(tiny_model_path):
    """The entry that reaches into the sink is scored by its keys past the sink alone: every decided place of each
    head's order (query last) follows the reference without the sink's rows, and that reference orders
    differently from the one with them somewhere (the check can tell them apart)."""
    params = SkvParams(Policy.SENTENCE, BUDGET, 40, RING, query=QueryMode.LAST, exclude_sink=1)
    r = Run(tiny_model_path, replace(params, exclude_sink=0))
    try:
        r.skv.set_params(params)  # switched on after the prefill: every vector again
        g = CFG.n_head // CFG.n_head_kv
        sink = params.sink
        first = next(i for i, (a, b) in enumerate(r.skv.sentences()) if a < sink < b)  # reaches into the sink
        checked = moved = 0
        prev_q = None
        for p in range(N_PREFILL, N_PREFILL + 6):
            n_before = len(r.skv.sentences())
            rec = r.step(p)
            if prev_q is not None and len(r.skv.sentences()) == n_before:
                ring_start = max(sink, p - RING + 1)
                has = [min(b, ring_start) > max(a, sink) for a, b in r.skv.sentences()]
                for il in range(CFG.n_layer):
                    for h in range(CFG.n_head_kv):
                        ref = {}
                        for xs in (True, False):
                            v = r.vectors(il, exclude_sink=xs, sink=sink)[:n_before, h]
                            s = (v @ prev_q[il, h * g : (h + 1) * g].sum(axis=0)) / np.sqrt(CFG.head_dim)
                            ref[xs] = (s, [i for i in np.argsort(-s, kind="stable") if has[i]])
                        s, order = ref[True]
                        moved += order.index(first) != ref[False][1].index(first)
                        got = [e for e, _ in _picks(r.skv, il, h)]
                        ks = [s[i] for i in order]
                        for i, e in enumerate(got[:-1]):
                            if (
                                i + 1 < len(order)
                                and (i == 0 or _gap_ok(ks, i - 1, 1e-3))
                                and _gap_ok(ks, i, 1e-3)
                            ):
                                assert e == order[i], (p, il, h, i)
                                checked += 1
            prev_q = r._q(rec)[:, 0]
        assert checked >= 20 and moved > 0, (checked, moved)
    finally:
        r.close()


def test_dense_layers_attend_like_full_and_the_rest_stay_sparse(tiny_model_path):
    params = SkvParams(Policy.SENTENCE, BUDGET, SINK, RING, dense_layers=1)
    r = Run(tiny_model_path, params, extra=("kqv_out",))
    try:
        p = N_PREFILL
        r.skv.set_params(replace(params, policy=Policy.FULL))
        ref = r.step(p)["data"]
        r.redo(p)
        r.skv.set_params(params)
        got = r.step(p)["data"]
        assert np.array_equal(got["kqv_out-0"], ref["kqv_out-0"])  # layer 0: upstream's dense attention
        assert not np.allclose(got["kqv_out-1"], ref["kqv_out-1"])  # layer 1: the budget only
        assert all(not r.skv.selection(0, h) for h in range(CFG.n_head_kv))
        assert all(sum(n for _, n in _picks(r.skv, 1, h)) > 0 for h in range(CFG.n_head_kv))
        with pytest.raises(ValueError, match="sparse"):
            r.skv.set_params(replace(params, dense_layers=CFG.n_layer))  # at least one layer stays sparse
        assert r.skv.get_params().dense_layers == 1
    finally:
        r.close()


def test_edge_skip_takes_whole_entries_and_neighbours_come_along(tiny_model_path):
    params = SkvParams(Policy.SENTENCE, BUDGET, SINK, RING)
    r = Run(tiny_model_path, params)
    try:
        p = N_PREFILL
        spans = r.skv.sentences()
        ring_start = max(SINK, p - RING + 1)
        whole = [min(b, ring_start) - max(a, SINK) for a, b in spans]
        r.skv.set_params(replace(params, edge=Edge.SKIP))
        r.step(p)
        n_slot = BUDGET - SINK - RING
        for il in range(CFG.n_layer):
            for h in range(CFG.n_head_kv):
                picks = _picks(r.skv, il, h)
                cut = [e for e, n in picks if n < whole[e]]
                assert len(cut) <= 1 and (not cut or cut[0] == picks[-1][0]), picks
                open_tokens = ring_start - max(SINK, spans[-1][1]) if spans[-1][1] < ring_start else 0
                assert sum(n for _, n in picks) + open_tokens == n_slot
        r.redo(p)
        r.skv.set_params(replace(params, neighbours=1))
        r.step(p)
        for il in range(CFG.n_layer):
            for h in range(CFG.n_head_kv):
                ids = [e for e, _ in _picks(r.skv, il, h)]
                first = ids[0]
                # the best entry's neighbours follow it at once (those with tokens outside sink and ring)
                nbs = [j for j in (first - 1, first + 1) if 0 <= j < len(spans) and whole[j] > 0]
                assert ids[1 : 1 + len(nbs)] == nbs, ids[:5]
    finally:
        r.close()


def test_levers_round_trip_through_the_c_params_and_reject_bad_values():
    p = SkvParams(
        query=QueryMode.LAST,
        gqa=Gqa.HEADS,
        dense_layers=2,
        edge=Edge.SKIP,
        neighbours=1,
        oracle=Oracle.TOKENS_LAG,
        summary=Summary.BOUND,
        exclude_sink=1,
    )
    assert params_from_c(params_to_c(p)) == p
    with pytest.raises(ValueError, match="neighbours"):
        SkvParams(neighbours=5)
    with pytest.raises(ValueError, match="dense_layers"):
        SkvParams(dense_layers=-1)
    with pytest.raises(ValueError, match="GQA"):
        Gqa.parse("mean")
