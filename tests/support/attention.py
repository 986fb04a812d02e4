"""Attention in NumPy over a staged step's token set, for the tests that check what a sparse step computes."""

from __future__ import annotations

import numpy as np

from engine.native import SkvContext
from engine.params import Policy


def attend(
    q: np.ndarray, K: np.ndarray, V: np.ndarray, pos_per_head: list[np.ndarray], gqa: int
) -> np.ndarray:
    """q [n_head, hd]; K/V [n_pos, n_kv, hd]; positions per KV head -> output [n_head, hd] (F64)."""
    n_head, hd = q.shape
    out = np.zeros((n_head, V.shape[2]))
    for h in range(n_head):
        kv = h // gqa
        pos = pos_per_head[kv]
        k = K[pos, kv].astype(np.float64)
        v = V[pos, kv].astype(np.float64)
        s = k @ q[h].astype(np.float64) / np.sqrt(hd)
        w = np.exp(s - s.max())
        out[h] = (w / w.sum()) @ v
    return out


def attended(
    skv: SkvContext, sents, il: int, h: int, p: int, budget: int, sink: int, ring: int, open_start: int
):
    """The positions (ascending) KV head h of layer il attends at step p under the rules of native/README.md for
    the native's reported selection, and each picked entry's token range."""
    ring_start = max(sink, p - ring + 1)
    n_slot = 0 if skv.get_params().policy == Policy.WINDOW else max(0, budget - sink - ring)
    pos = list(range(min(sink, p))) + list(range(ring_start, p + 1))
    a = max(open_start, sink)
    n_open = max(0, min(min(p, ring_start) - a, n_slot))
    pos += list(range(a, a + n_open))
    picks = []
    for x in skv.selection(il, h):
        s0 = max(sents[x.entry][0], sink)
        pos += list(range(s0, s0 + x.n_tokens))
        picks.append((s0, s0 + x.n_tokens))
    assert len(pos) == len(set(pos)), f"layer {il} head {h} step {p}: a token attended twice"
    return np.array(sorted(pos)), picks
