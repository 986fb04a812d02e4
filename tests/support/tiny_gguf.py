"""The tiny random-weight llama GGUF for fast native tests (engine/bench/synthetic.py writes it).

2 layers, n_embd 256, 4 query heads / 2 KV heads (GQA), head_dim 64, FFN 512, RoPE, context 4096, no sliding window,
F32 weights from a seeded RNG; q/k weights ~ N(0, 0.2) make attention peaked rather than uniform, so attending
different token sets (budgets, policies) gives clearly different logits. The tokenizer comes from the llama.cpp
tree under the cache dir, so no network is needed.
"""

from __future__ import annotations

from pathlib import Path

from engine.bench.synthetic import VOCAB_FILE, find_vocab_file, source_roots, write_random_llama
from engine.bench.synthetic import LlamaShape as TinyConfig

__all__ = ["VOCAB_FILE", "TinyConfig", "find_vocab_file", "source_roots", "write_tiny_gguf"]


def write_tiny_gguf(path: Path, vocab_path: Path, cfg: TinyConfig | None = None) -> Path:
    """Write the tiny model to `path` (atomically) and return it."""
    return write_random_llama(path, vocab_path, cfg or TinyConfig(), quant="f32")


if __name__ == "__main__":
    import sys

    vocab = find_vocab_file()
    if vocab is None:
        sys.exit(f"{VOCAB_FILE} not found; run native/build.py first")
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tiny.gguf")
    print(write_tiny_gguf(out, vocab))
