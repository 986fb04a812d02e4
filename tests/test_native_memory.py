"""Issue 3, item 5: the full-attention layers' K/V live in host buffers, and the device-side SentenceKV bytes
(semantic vectors + staging, read from their ggml buffers) stay under 1/8 of those layers' full K/V at 32k."""

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
        assert st.sent_cap == 4096 // 6
    finally:
        s.close()


@pytest.mark.slow
def test_gemma_skv_on_full_attention_layers_only_and_device_bytes_small_at_32k(default_model_path):
    s = open_session(default_model_path, n_ctx=32768, budget=1024)
    try:
        st = s.skv.stats()
        assert s.skv.layers() == [5, 11, 17]  # iSWA: the sliding-window layers keep their own cache
        full_attn_kv = 3 * 32768 * (256 + 256) * 2
        assert st.host_kv_bytes == full_attn_kv
        ratio = st.device_skv_bytes / st.host_kv_bytes
        assert ratio <= 1 / 8, f"device SKV bytes are {ratio:.3f} of the full-attention K/V"
    finally:
        s.close()
