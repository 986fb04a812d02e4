"""Issue 3, item 3: O(budget) for real.

Through llama.cpp's eval callback, the flash-attention node (GGML_OP_FLASH_ATTN_EXT, found as src[0] of the
"kqv_out-<il>" reshape) of every SKV layer of a decode graph attends K/V (its src[1]/src[2]) with
pad256(min(p+1, budget)) <= S_max rows at ~1k and at ~16k context alike, while the same step under policy `full` attends
K with (at least) the whole context. The staged K is the view named "skv_k_staged" (set in native) of the staging
tensor "skv_stage_k_l<il>", which lives in the staging buffer, not in the KV cache.
"""

from __future__ import annotations

import numpy as np
from eval_capture import Capture, LowLevelContext, attention_nodes

from engine.native import SkvContext
from engine.params import Policy, Remap, SkvParams

N_CTX = 16896  # 16k + 512
BUDGET = 1024
SINK, RING = 32, 64
PAD = 256


def _pad(n: int) -> int:
    return (n + PAD - 1) // PAD * PAD


def _decode_one(c: LowLevelContext, skv: SkvContext, token: int, policy: Policy):
    # remapping off: 16k is past the tiny model's trained 4096, where `auto` would read the rotated copy
    # "skv_k_rot-<il>" (budget-sized too; tests/test_native_remap.py) instead of the staging view itself
    skv.set_params(SkvParams(policy, BUDGET, SINK, RING, remap=Remap.OFF))
    p = c.n_past
    rec = c.decode([token])
    fa = attention_nodes(rec)
    assert sorted(fa) == skv.layers(), f"attention nodes of layers {sorted(fa)}"
    for il, n in fa.items():
        assert n.op == "FLASH_ATTN_EXT", f"layer {il}: {n.op}"
        assert n.src[1].ne[1] == n.src[2].ne[1], "K and V rows differ"
    return p, fa


def _check_staged(p: int, fa, s_max: int, cache_k: dict) -> int:
    rows = {il: n.src[1].ne[1] for il, n in fa.items()}
    want = min(s_max, _pad(min(p + 1, BUDGET)))
    assert set(rows.values()) == {want}, f"step at {p}: staged rows {rows}, expected {want}"
    for il, n in fa.items():
        k = n.src[1]  # the permuted view flash attention reads
        assert k.op == "PERMUTE" and k.src[0].name == "skv_k_staged", (k.name, k.src[0].name)
        assert n.src[2].src[0].name == "skv_v_staged"
        stage = k.view_src
        assert stage.name == f"skv_stage_k_l{il}" and stage.ne[1] == s_max, (stage.name, stage.ne)
        # the staging buffer, not the cache: another buffer, and addresses outside the cache's K tensor
        cache = cache_k[il]
        assert k.buffer == stage.buffer and k.buffer != cache.buffer
        assert stage.data <= k.data and k.data + k.nbytes_span <= stage.data + stage.nbytes_span
        assert k.data + k.nbytes_span <= cache.data or k.data >= cache.data + cache.nbytes_span
    return want


def _check_dense(p: int, fa) -> dict:
    cache_k = {}
    for il, n in fa.items():
        k = n.src[1]
        cache = k.view_src
        assert cache.name == f"cache_k_l{il}" and cache.ne[1] == N_CTX, (cache.name, cache.ne)
        # dense attention reads every used cell (padded to 256)
        assert p + 1 <= k.ne[1] <= min(N_CTX, _pad(p + 1)), f"dense step at {p}: K rows {k.ne[1]}"
        cache_k[il] = cache
    return cache_k


def test_decode_graph_attends_s_max_rows_at_1k_and_16k(tiny_model_path):
    cap = Capture(want=lambda name: name.startswith("kqv_out-"))
    rng = np.random.default_rng(0)
    tokens = rng.integers(100, 30000, N_CTX).tolist()
    n_batch = 1024
    with LowLevelContext(
        tiny_model_path,
        N_CTX,
        cap,
        skv=SkvParams(Policy.SENTENCE, BUDGET, SINK, RING, remap=Remap.OFF),  # see _decode_one
        n_batch=n_batch,
        n_threads=1,
    ) as c:
        skv = SkvContext(c.ctx)
        skv.add_boundaries(list(range(20, N_CTX - 16, 20)))
        s_max = skv.stats().s_max
        assert s_max == _pad(BUDGET)

        def prefill_to(n: int) -> None:
            while c.n_past < n:
                c.decode(tokens[c.n_past : min(n, c.n_past + n_batch)])

        results = {}
        for label, n_prefill in (("1k", 1200), ("16k", 16200)):
            prefill_to(n_prefill)
            p_dense, fa_dense = _decode_one(c, skv, tokens[c.n_past], Policy.FULL)
            cache_k = _check_dense(p_dense, fa_dense)
            p, fa = _decode_one(c, skv, tokens[c.n_past], Policy.SENTENCE)
            rows = _check_staged(p, fa, s_max, cache_k)
            st = skv.stats()
            assert st.attended_last == min(p + 1, BUDGET)
            results[label] = (fa_dense[skv.layers()[0]].src[1].ne[1], rows)

    (dense_1k, staged_1k), (dense_16k, staged_16k) = results["1k"], results["16k"]
    assert staged_1k == staged_16k == s_max  # O(budget): the same rows at 1k and 16k
    assert dense_16k >= 16200 > 12 * staged_16k  # while dense attention reads the whole context
    assert dense_1k < 2 * staged_1k
