"""The tiny model trained to 512 positions that the remap and score tests share, NumPy's RoPE for it, and the
random sentence ends they index."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_gguf import TinyConfig, find_vocab_file, write_tiny_gguf

CFG = TinyConfig(n_head=8, n_head_kv=2, head_dim=32, n_ctx_train=512, seed=91)


def write_model(tmp_path_factory):
    """The model file (a module fixture's body); skips when the llama.cpp vocab is missing."""
    vocab = find_vocab_file()
    if vocab is None:
        pytest.skip("the llama.cpp vocab GGUF is missing; run native/build.py first")
    return write_tiny_gguf(tmp_path_factory.mktemp("remap") / "tiny-512.gguf", vocab, CFG)


def rope(x: np.ndarray, pos: np.ndarray, base: float = CFG.rope_freq_base) -> np.ndarray:
    """llama's RoPE (adjacent pairs, LLAMA_ROPE_TYPE_NORM) of rows x [n, hd] at positions pos [n], in F64."""
    hd = x.shape[-1]
    theta = np.asarray(pos, np.float64)[:, None] * base ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    c, s = np.cos(theta), np.sin(theta)
    x0, x1 = x[:, 0::2].astype(np.float64), x[:, 1::2].astype(np.float64)
    out = np.empty(x.shape, np.float64)
    out[:, 0::2] = x0 * c - x1 * s
    out[:, 1::2] = x0 * s + x1 * c
    return out


def sentence_ends(rng, n: int) -> list[int]:
    """Random sentence ends (3 to 39 tokens apart) below n."""
    ends, e = [], 0
    while True:
        e += int(rng.integers(3, 40))
        if e >= n:
            return ends
        ends.append(e)
