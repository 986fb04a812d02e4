"""The full-attention layers' K/V live in host buffers; the device-side SentenceKV bytes (semantic vectors +
staging, read from their ggml buffers) are small, and the vector table grows with the document's sentences instead
of being sized by n_ctx."""

from __future__ import annotations

import pytest
from skv_harness import open_session


def test_tiny_model_all_layers_are_skv_layers_with_host_kv(tiny_model_path):
    s = open_session(tiny_model_path, n_ctx=4096, budget=1024)
    try:
        st = s.skv.stats()
        assert s.skv.layers() == [0, 1]
        assert st.on_device == 0  # CPU build: "device" is the CPU backend
        # 2 layers x 4096 cells x (K + V: 2 heads x 64) x 2 bytes (F16), read from the buffers
        assert st.host_kv_bytes == 2 * 4096 * 2 * 128 * 2
        assert st.s_max == 1024
        assert st.device_stage_bytes >= 2 * 2 * 1024 * 128 * 2
        assert st.sent_cap == 256  # the vector table starts at one pad and grows with the index
    finally:
        s.close()


def test_vector_table_grows_with_the_sentences_and_keeps_every_one(tiny_model_path):
    """1000 sentences of 3 tokens: the table grows past its first 256 rows between steps (nothing is merged), the
    vectors stay on the device for every sentence, and decoding on top of it still runs."""
    import numpy as np

    s = open_session(tiny_model_path, n_ctx=4096, budget=1024)
    try:
        before = s.skv.stats()
        n_tok = 3000
        ends = list(range(3, n_tok + 1, 3))
        s.skv.add_boundaries(ends)
        s.llm.eval([int(t) for t in np.random.default_rng(0).integers(10, 1000, n_tok)])
        st = s.skv.stats()
        assert st.n_sentences == len(ends) == 1000
        assert st.sent_cap >= 1000 and st.sent_cap % 256 == 0
        assert st.device_vec_bytes > before.device_vec_bytes
        assert st.device_vec_bytes == st.sent_cap * st.n_layers * st.n_head_kv * st.head_dim * 2  # F16 rows
        for _ in range(4):  # staged steps over the grown table; generated sentences keep closing
            s.llm.eval([int(np.argmax(s.logits()))])
        s.skv.add_boundaries([n_tok + 4])
        s.llm.eval([5])
        assert s.skv.stats().n_sentences == 1001
    finally:
        s.close()


@pytest.mark.slow
def test_default_model_every_layer_is_a_skv_layer_and_device_bytes_are_a_twentieth_at_32k(default_model_path):
    """Qwen2.5-Coder-0.5B: all 24 layers full attention, all SentenceKV; before a document the device holds the
    staging and a 256-row vector table, well under 1/20 of the full K/V (the figure with walden's 32k tokens
    loaded is measured by `skv bench speed`, docs/BENCHMARKS.md)."""
    s = open_session(default_model_path, n_ctx=32768, budget=1024)
    try:
        st = s.skv.stats()
        assert s.skv.layers() == list(range(24))
        full_kv = 24 * 32768 * 2 * (64 + 64) * 2
        assert st.host_kv_bytes == full_kv
        assert st.device_skv_bytes <= full_kv / 20, st
    finally:
        s.close()


@pytest.mark.slow
def test_gemma_skv_on_full_attention_layers_only_and_device_bytes_small_at_32k(gemma_model_path):
    s = open_session(gemma_model_path, n_ctx=32768, budget=1024)
    try:
        st = s.skv.stats()
        assert s.skv.layers() == [5, 11, 17]  # iSWA: the sliding-window layers keep their own cache
        full_attn_kv = 3 * 32768 * (256 + 256) * 2
        assert st.host_kv_bytes == full_attn_kv
        ratio = st.device_skv_bytes / st.host_kv_bytes
        assert ratio <= 1 / 8, f"device SKV bytes are {ratio:.3f} of the full-attention K/V"
    finally:
        s.close()
