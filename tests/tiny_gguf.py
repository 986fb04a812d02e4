"""A tiny random-weight llama-architecture GGUF for fast native tests.

2 layers, n_embd 256, 4 query heads / 2 KV heads (GQA), head_dim 64, FFN 512, RoPE, context 4096, no sliding window,
F32 weights from a seeded RNG. The tokenizer (every tokenizer.* key, vocab arrays included) is copied from
vendor/llama.cpp/models/ggml-vocab-llama-spm.gguf in the llama-cpp-python source tree that native/build.py keeps
under the cache dir, so no network is needed.

Scales: weights ~ N(0, 0.02) keep activations sane; q/k weights ~ N(0, QK_STD) make attention peaked rather than
uniform, so attending different token sets (budgets, policies) gives clearly different logits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VOCAB_FILE = "ggml-vocab-llama-spm.gguf"
QK_STD = 0.2
W_STD = 0.02


@dataclass(frozen=True, slots=True)
class TinyConfig:
    n_layer: int = 2
    n_embd: int = 256
    n_head: int = 4
    n_head_kv: int = 2
    head_dim: int = 64
    n_ff: int = 512
    n_ctx_train: int = 4096
    rope_freq_base: float = 10000.0
    rms_eps: float = 1e-5
    seed: int = 1234
    chat_template: str = ""  # tokenizer.chat_template, when set


def _source_roots() -> list[Path]:
    from engine.paths import cache_dir

    roots = []
    if os.environ.get("SKV_LLAMA_SOURCE"):  # an unpacked llama-cpp-python sdist, e.g. for `build.py --source`
        roots.append(Path(os.environ["SKV_LLAMA_SOURCE"]))
    cache = cache_dir()
    roots += sorted((cache / "src").glob("*/tree"))
    roots += sorted((cache / "sdist").glob("llama_cpp_python-*"))
    return roots


def find_vocab_file() -> Path | None:
    """The SPM vocab-only GGUF from a local llama.cpp tree, or None (tests then skip)."""
    for root in _source_roots():
        p = root / "vendor" / "llama.cpp" / "models" / VOCAB_FILE
        if p.is_file():
            return p
    return None


def _copy_tokenizer(writer, vocab_path: Path) -> int:
    """Copy all tokenizer.* keys; returns the vocab size."""
    from gguf import GGUFReader, GGUFValueType

    reader = GGUFReader(vocab_path)
    n_vocab = 0
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        vtype = GGUFValueType(field.types[0])
        value = field.contents()
        if vtype == GGUFValueType.ARRAY:
            sub = GGUFValueType(field.types[1])
            writer.add_key_value(name, value, vtype, sub_type=sub)
            if name == "tokenizer.ggml.tokens":
                n_vocab = len(value)
        else:
            writer.add_key_value(name, value, vtype)
    if n_vocab == 0:
        raise ValueError(f"{vocab_path} has no tokenizer.ggml.tokens")
    return n_vocab


def write_tiny_gguf(path: Path, vocab_path: Path, cfg: TinyConfig = TinyConfig()) -> Path:
    """Write the tiny model to `path` (atomically) and return it."""
    import gguf

    path = Path(path)
    rng = np.random.default_rng(cfg.seed)
    tmp = path.with_name(path.name + ".tmp")
    w = gguf.GGUFWriter(tmp, "llama")
    w.add_name("skv-tiny-llama")
    w.add_context_length(cfg.n_ctx_train)
    w.add_embedding_length(cfg.n_embd)
    w.add_block_count(cfg.n_layer)
    w.add_feed_forward_length(cfg.n_ff)
    w.add_head_count(cfg.n_head)
    w.add_head_count_kv(cfg.n_head_kv)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_rope_freq_base(cfg.rope_freq_base)
    w.add_layer_norm_rms_eps(cfg.rms_eps)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    n_vocab = _copy_tokenizer(w, vocab_path)
    if cfg.chat_template:
        w.add_chat_template(cfg.chat_template)
    w.add_vocab_size(n_vocab)

    def normal(std: float, *shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    ones = np.ones(cfg.n_embd, dtype=np.float32)
    n_q, n_kv = cfg.n_head * cfg.head_dim, cfg.n_head_kv * cfg.head_dim
    # numpy shape is (rows = output features, cols = input features); ggml sees it reversed.
    w.add_tensor("token_embd.weight", normal(W_STD, n_vocab, cfg.n_embd))
    for i in range(cfg.n_layer):
        w.add_tensor(f"blk.{i}.attn_norm.weight", ones)
        w.add_tensor(f"blk.{i}.attn_q.weight", normal(QK_STD, n_q, cfg.n_embd))
        w.add_tensor(f"blk.{i}.attn_k.weight", normal(QK_STD, n_kv, cfg.n_embd))
        w.add_tensor(f"blk.{i}.attn_v.weight", normal(W_STD, n_kv, cfg.n_embd))
        w.add_tensor(f"blk.{i}.attn_output.weight", normal(W_STD, cfg.n_embd, n_q))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", ones)
        w.add_tensor(f"blk.{i}.ffn_gate.weight", normal(W_STD, cfg.n_ff, cfg.n_embd))
        w.add_tensor(f"blk.{i}.ffn_up.weight", normal(W_STD, cfg.n_ff, cfg.n_embd))
        w.add_tensor(f"blk.{i}.ffn_down.weight", normal(W_STD, cfg.n_embd, cfg.n_ff))
    w.add_tensor("output_norm.weight", ones)
    w.add_tensor("output.weight", normal(W_STD, n_vocab, cfg.n_embd))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, path)
    return path


if __name__ == "__main__":
    import sys

    vocab = find_vocab_file()
    if vocab is None:
        sys.exit(f"{VOCAB_FILE} not found; run native/build.py first")
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tiny.gguf")
    print(write_tiny_gguf(out, vocab))
