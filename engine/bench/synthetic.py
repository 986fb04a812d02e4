"""Random-weight llama-architecture GGUF files, written offline: the tiny test fixture and the 1B-like shape of
`skv bench scale`.

The tokenizer (every tokenizer.* key, vocab arrays included) is copied from
vendor/llama.cpp/models/ggml-vocab-llama-spm.gguf in the llama-cpp-python source tree that native/build.py keeps
under the cache dir (or $SKV_LLAMA_SOURCE), so nothing is downloaded.

Scales: weights ~ N(0, W_STD) keep activations sane; q/k weights ~ N(0, qk_std) set how peaked attention is.
Weights are F32, or Q4_0 for the benchmark shape (one random layer quantized once and repeated: speed and memory
do not depend on the values).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VOCAB_FILE = "ggml-vocab-llama-spm.gguf"
W_STD = 0.02


@dataclass(frozen=True, slots=True)
class LlamaShape:
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
    qk_std: float = 0.2
    name: str = "skv-tiny-llama"


# Llama-3.2-1B's attention/FFN shape (16 layers, hidden 2048, FFN 8192, 32 heads, 8 KV heads, head_dim 64) with the
# llama-spm vocabulary; tied output embedding as in Llama 3.2
LLAMA_1B_LIKE = LlamaShape(
    n_layer=16,
    n_embd=2048,
    n_head=32,
    n_head_kv=8,
    head_dim=64,
    n_ff=8192,
    n_ctx_train=262144,
    rope_freq_base=500000.0,
    qk_std=W_STD,
    name="skv-bench-1b-like",
)
# the built-in default's (Qwen2.5-Coder-0.5B) attention shape: 24 layers, hidden 896, 14 query / 2 KV heads of 64,
# FFN 4864, trained to 32,768 (llama architecture, no QKV biases: speed, memory and exactness do not need them)
DEFAULT_LIKE = LlamaShape(
    n_layer=24,
    n_embd=896,
    n_head=14,
    n_head_kv=2,
    head_dim=64,
    n_ff=4864,
    n_ctx_train=32768,
    rope_freq_base=1000000.0,
    qk_std=W_STD,
    name="skv-default-like",
)
# the same heads in 2 layers: the quick rehearsal of native/tools/gpu_check.sh
TINY_DEFAULT_LIKE = LlamaShape(
    n_layer=2,
    n_embd=896,
    n_head=14,
    n_head_kv=2,
    head_dim=64,
    n_ff=1024,
    n_ctx_train=4096,
    rope_freq_base=1000000.0,
    qk_std=W_STD,
    name="skv-default-like-2l",
)


def source_roots() -> list[Path]:
    from engine.paths import cache_dir

    roots = []
    if os.environ.get("SKV_LLAMA_SOURCE"):  # an unpacked llama-cpp-python sdist, e.g. for `build.py --source`
        roots.append(Path(os.environ["SKV_LLAMA_SOURCE"]))
    cache = cache_dir()
    roots += sorted((cache / "src").glob("*/tree"))
    roots += sorted((cache / "sdist").glob("llama_cpp_python-*"))
    return roots


SHIPPED_VOCAB = Path(__file__).resolve().parents[2] / "resources" / "vocab" / (VOCAB_FILE + ".gz")


def find_vocab_file() -> Path | None:
    """The SPM vocab-only GGUF from a local llama.cpp tree, else the copy shipped under resources/vocab (unpacked
    once into the cache dir), or None."""
    for root in source_roots():
        p = root / "vendor" / "llama.cpp" / "models" / VOCAB_FILE
        if p.is_file():
            return p
    return unpack_shipped_vocab()


def unpack_shipped_vocab() -> Path | None:
    import gzip
    import shutil

    from engine.paths import cache_dir

    if not SHIPPED_VOCAB.is_file():
        return None
    out = cache_dir() / "vocab" / VOCAB_FILE
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        with gzip.open(SHIPPED_VOCAB, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, out)
    return out


def copy_tokenizer(writer, vocab_path: Path) -> int:
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


def write_random_llama(
    path: Path, vocab_path: Path, cfg: LlamaShape = LlamaShape(), quant: str = "f32"
) -> Path:
    """Write a random-weight llama GGUF to `path` (atomically) and return it. quant: "f32" (every layer drawn,
    output matrix included) or "q4_0" (one layer drawn and repeated, output tied to the embedding)."""
    import gguf

    if quant not in ("f32", "q4_0"):
        raise ValueError(f"quant must be f32 or q4_0, got {quant!r}")
    path = Path(path)
    rng = np.random.default_rng(cfg.seed)
    tmp = path.with_name(path.name + ".tmp")
    w = gguf.GGUFWriter(tmp, "llama")
    w.add_name(cfg.name)
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
    w.add_file_type(gguf.LlamaFileType.ALL_F32 if quant == "f32" else gguf.LlamaFileType.MOSTLY_Q4_0)
    n_vocab = copy_tokenizer(w, vocab_path)
    if cfg.chat_template:
        w.add_chat_template(cfg.chat_template)
    w.add_vocab_size(n_vocab)

    def normal(std: float, *shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    q4 = gguf.GGMLQuantizationType.Q4_0

    def encode(data: np.ndarray) -> tuple[np.ndarray, object]:
        """(array, raw dtype): F32 as it is; with q4_0, matrices quantized."""
        if quant == "q4_0" and data.ndim == 2:
            return gguf.quants.quantize(data, q4), q4
        return data, None

    def add(name: str, enc: tuple[np.ndarray, object]) -> None:
        w.add_tensor(name, enc[0], raw_dtype=enc[1])

    ones = encode(np.ones(cfg.n_embd, dtype=np.float32))
    n_q, n_kv = cfg.n_head * cfg.head_dim, cfg.n_head_kv * cfg.head_dim
    # numpy shape is (rows = output features, cols = input features); ggml sees it reversed.
    matrices = {
        "attn_q": (cfg.qk_std, n_q, cfg.n_embd),
        "attn_k": (cfg.qk_std, n_kv, cfg.n_embd),
        "attn_v": (W_STD, n_kv, cfg.n_embd),
        "attn_output": (W_STD, cfg.n_embd, n_q),
        "ffn_gate": (W_STD, cfg.n_ff, cfg.n_embd),
        "ffn_up": (W_STD, cfg.n_ff, cfg.n_embd),
        "ffn_down": (W_STD, cfg.n_embd, cfg.n_ff),
    }
    add("token_embd.weight", encode(normal(W_STD, n_vocab, cfg.n_embd)))
    layer: dict[str, tuple[np.ndarray, object]] = {}
    for i in range(cfg.n_layer):
        if quant == "f32" or not layer:  # q4_0: one random layer, encoded once and repeated
            layer = {k: encode(normal(std, *shape)) for k, (std, *shape) in matrices.items()}
        add(f"blk.{i}.attn_norm.weight", ones)
        add(f"blk.{i}.ffn_norm.weight", ones)
        for k, enc in layer.items():
            add(f"blk.{i}.{k}.weight", enc)
    add("output_norm.weight", ones)
    if quant == "f32":
        add("output.weight", encode(normal(W_STD, n_vocab, cfg.n_embd)))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, path)
    return path
