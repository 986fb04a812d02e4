"""prepare's per-layer stage runs on the context's threads (llama-skv-select.cpp, stage_layers: each worker takes
every n-th layer, with its own scratch and cell memo). On two threads a staged step must stage exactly what one
thread stages: the same selection in every layer and head, the same rows copied, the same output — also after
positions were removed from the middle of the cache (the read-only cell lookups of the workers cannot rebuild the
position map; such a step is staged again serially)."""

from __future__ import annotations

import numpy as np
import pytest
from eval_capture import LowLevelContext
from tiny_gguf import TinyConfig, find_vocab_file, write_tiny_gguf

from engine.native import Policy, SkvContext, SkvParams

N_CTX = 1024
PARAMS = SkvParams(Policy.SENTENCE, 160, 8, 16)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    vocab = find_vocab_file()
    if vocab is None:
        pytest.skip("the llama.cpp vocab GGUF is missing; run native/build.py first")
    cfg = TinyConfig(n_layer=4, n_head=8, n_head_kv=2, head_dim=32, seed=23)
    return write_tiny_gguf(tmp_path_factory.mktemp("workers") / "tiny-4l.gguf", vocab, cfg)


def _steps(path, threads: int, hole: tuple[int, int] | None) -> list[tuple]:
    rng = np.random.default_rng(11)
    tokens = rng.integers(100, 20000, 700).tolist()
    ends = np.cumsum(rng.integers(6, 30, 60)).tolist()
    with LowLevelContext(path, N_CTX, None, skv=PARAMS, n_threads=threads) as c:
        skv = SkvContext(c.ctx)
        skv.add_boundaries([e for e in ends if e < 700])
        for p0 in range(0, 600, 200):
            c.decode(tokens[p0 : p0 + 200])
        if hole is not None:
            c.ll.llama_memory_seq_rm(c.ll.llama_get_memory(c.ctx), 0, *hole)
        out = []
        for t in tokens[600:630]:
            c.decode([t])
            st = skv.stats()
            ids, offs = skv.selections()
            out.append((c.logits(), ids, offs, st.rows_uploaded_last, st.attended_last, st.n_skv_steps))
        return out


@pytest.mark.parametrize("hole", [None, (200, 260)], ids=["appended", "hole"])
def test_two_threads_stage_what_one_thread_stages(model, hole):
    one, two = _steps(model, 1, hole), _steps(model, 2, hole)
    assert one[-1][5] == two[-1][5] == 30, "every step after the prefill was staged"
    restaged, rows = [], 0
    for k, (a, b) in enumerate(zip(one, two, strict=True)):
        assert np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2]), f"step {k}: another selection"
        assert a[4:] == b[4:], f"step {k}: tokens attended"
        if a[3] != b[3] or restaged:
            # rows restaged from empty sit in other slots: attention sums them in another order (F16 rounding)
            assert np.abs(a[0] - b[0]).max() <= 2e-2 * max(1.0, np.abs(a[0]).max()), f"step {k}: another output"
        else:
            assert np.allclose(a[0], b[0], rtol=1e-4, atol=1e-4), f"step {k}: another output"
        if a[3] != b[3]:
            # staged again, serially, from empty staging: every attended row of the 4 layers x 2 KV heads copied
            assert b[3] == 4 * 2 * (b[4] - 1), f"step {k}: rows copied {a[3]} vs {b[3]}"
            restaged.append(k)
        rows += a[3]
    assert rows > 30 * 4 * 2, "the selection changed between steps: rows were copied beyond the current token's"
    # appended tokens: the workers find every cell; a hole: the first step that reaches into it is staged again
    # serially, and the steps after it serially from the start
    assert len(restaged) == (0 if hole is None else 1), restaged
