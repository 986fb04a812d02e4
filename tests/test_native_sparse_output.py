"""Issue 3: what a sparse decode step computes is attention over exactly the selected tokens.

The selection tests check *which* sentences are chosen; the exactness tests check the staged path when every token
is attended. This test closes the gap between them: with a budget below the context, each SKV layer's attention
output ("kqv_out-<il>") must equal softmax(q K^T * scale) V computed in NumPy over the token set the rules of
native/README.md give for the native's reported selection — sink, ring, the open sentence's tokens, and each picked
entry's earliest n_tokens outside sink and ring — with q, K and V taken raw through the eval callback ("Qcur-<il>",
"Kcur-<il>", "Vcur-<il>" of every ubatch; K and V rounded to F16 as the cache stores them). A stale staging slot,
a row staged for the wrong head, or a mask opening the wrong slots changes the output far beyond the tolerance; the
test also checks that the tolerance separates the right token set from near misses (dense, and the set with one
picked sentence left out). Under `chunk` it found a real bug: the open *sentence* was taken instead of the open
chunk, so tokens of the last closed chunk were staged twice.
"""

from __future__ import annotations

import numpy as np
import pytest
from attention import attend as _attend
from attention import attended as _attended
from eval_capture import Capture, LowLevelContext
from tiny_gguf import TinyConfig, find_vocab_file, write_tiny_gguf

from engine.native import SkvContext
from engine.params import Policy, SkvParams

# CPU flash attention rounds q to F16 and accumulates V·softmax in F16: ~1e-3 of the output's scale
TOL = 5e-3


@pytest.fixture(scope="module")
def gqa_model(tmp_path_factory):
    vocab = find_vocab_file()
    if vocab is None:
        pytest.skip("the llama.cpp vocab GGUF is missing; run native/build.py first")
    cfg = TinyConfig(n_head=8, n_head_kv=2, head_dim=32, seed=77)
    return write_tiny_gguf(tmp_path_factory.mktemp("sparse") / "tiny-8q2kv.gguf", vocab, cfg), cfg


@pytest.mark.parametrize(
    "policy", [Policy.SENTENCE, Policy.CHUNK, Policy.WINDOW], ids=lambda p: p.name.lower()
)
def test_sparse_step_output_is_attention_over_the_selected_tokens(gqa_model, policy):
    path, cfg = gqa_model
    budget, sink, ring = 160, 8, 16
    n_prefill, n_decode, n_ctx = 700, 24, 1024
    names = {f"{x}-{il}" for x in ("Qcur", "Kcur", "Vcur", "kqv_out") for il in range(cfg.n_layer)}
    cap = Capture(want=lambda n: n in names, read_data=lambda n, op: n in names)
    rng = np.random.default_rng(5)
    tokens = rng.integers(100, 30000, n_prefill + n_decode).tolist()
    ends = []
    e = 0
    while True:
        e += int(rng.integers(3, 40))
        if e >= n_ctx:
            break
        ends.append(e)
    gqa = cfg.n_head // cfg.n_head_kv
    K = np.zeros((cfg.n_layer, n_ctx, cfg.n_head_kv, cfg.head_dim), np.float32)
    V = np.zeros_like(K)

    def store(rec: dict, p0: int) -> np.ndarray:
        d = rec["data"]
        q = np.stack([d[f"Qcur-{il}"][0] for il in range(cfg.n_layer)])  # [n_layer, n_tok, n_head, hd]
        for il in range(cfg.n_layer):
            k = d[f"Kcur-{il}"][0]
            v = d[f"Vcur-{il}"][0].reshape(k.shape)
            K[il, p0 : p0 + k.shape[0]] = k.astype(np.float16).astype(np.float32)
            V[il, p0 : p0 + k.shape[0]] = v.astype(np.float16).astype(np.float32)
        return q

    worst = 0.0
    margins = []
    with LowLevelContext(path, n_ctx, cap, skv=SkvParams(Policy.FULL, budget, sink, ring), n_threads=1) as c:
        skv = SkvContext(c.ctx)
        skv.add_boundaries(ends)
        for p0 in range(0, n_prefill, 350):
            store(c.decode(tokens[p0 : p0 + 350]), p0)
        closed = skv.sentences()
        chunk_len = round(
            sum(b - a for a, b in closed) / len(closed)
        )  # native/README.md: the mean sentence length
        skv.set_params(SkvParams(policy, budget, sink, ring))
        for p in range(n_prefill, n_prefill + n_decode):
            rec = c.decode([tokens[p]])
            q = store(rec, p)[:, 0]
            # entries (sentences, or chunks under `chunk`) ending at p + 1 closed after this step, not before it
            sents = skv.sentences()
            if policy == Policy.CHUNK:  # selection ids index fixed chunks then
                sents = [(a, a + chunk_len) for a in range(0, p + 1 - chunk_len + 1, chunk_len)]
            open_start = max([b for _, b in sents if b <= p], default=0)
            for il in range(cfg.n_layer):
                got = rec["data"][f"kqv_out-{il}"][0, 0].reshape(cfg.n_head, -1).astype(np.float64)
                sets = [
                    _attended(skv, sents, il, h, p, budget, sink, ring, open_start)
                    for h in range(cfg.n_head_kv)
                ]
                pos = [s for s, _ in sets]
                assert all(len(x) == len(pos[0]) for x in pos), "heads attend different counts"
                n_att = sink + ring if policy == Policy.WINDOW else min(budget, p + 1)
                assert len(pos[0]) == n_att == skv.stats().attended_last, (p, len(pos[0]))
                if policy == Policy.WINDOW:
                    assert all(not picks for _, picks in sets)
                else:
                    assert all(picks for _, picks in sets), f"step {p} layer {il}: no sentence picked"
                want = _attend(q[il], K[il], V[il], pos, gqa)
                err = float(np.abs(got - want).max())
                worst = max(worst, err)
                assert err <= TOL * max(1.0, float(np.abs(want).max())), (
                    f"step {p} layer {il}: max |kqv_out - reference| = {err:.3g}"
                )
                # the check discriminates: dense attention, or the set without the picked sentences, is far off
                alts = [[np.arange(p + 1)] * cfg.n_head_kv]
                if policy != Policy.WINDOW:
                    alts.append(
                        [
                            np.setdiff1d(x, np.concatenate([np.arange(a, b) for a, b in picks]))
                            for x, (_, picks) in zip(pos, sets, strict=True)
                        ]
                    )
                for alt in alts:
                    margins.append(float(np.abs(got - _attend(q[il], K[il], V[il], alt, gqa)).max()))
    assert min(margins) > 5 * max(worst, 1e-6), (min(margins), worst)
