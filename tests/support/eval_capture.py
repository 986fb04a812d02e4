"""Look inside llama.cpp's compute graphs from the tests: a ctypes mirror of `struct ggml_tensor`, a context opened
with the low-level API and an eval callback (`cb_eval`, which `llama_cpp.Llama` cannot take), and a capture helper
that records chosen nodes (name, op, shape, sources, data) of every graph a decode runs.

The mirror copies vendor/llama.cpp/ggml/include/ggml.h of the pinned llama-cpp-python 0.3.36 field by field;
`check_layout()` compares its size with the library's `ggml_tensor_overhead()` so a header change fails loudly.
On the CPU backend tensor->data is host memory, so the callback reads it in place (ask = False); a tensor in a
device buffer (layers offloaded: SKV_TEST_GPU_LAYERS, see `gpu_layers()`) is copied out with ggml_backend_tensor_get.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

GGML_MAX_DIMS = 4
GGML_MAX_OP_PARAMS = 64
GGML_MAX_SRC = 10
GGML_MAX_NAME = 64
GGML_OBJECT_SIZE = 32  # struct ggml_object: offs, size, next, type + padding[4]

GGML_TYPE_F32 = 0
GGML_TYPE_F16 = 1
GGML_TYPE_I32 = 26


class GgmlTensor(ctypes.Structure):
    pass


GgmlTensor._fields_ = [
    ("type", ctypes.c_int),
    ("buffer", ctypes.c_void_p),
    ("ne", ctypes.c_int64 * GGML_MAX_DIMS),
    ("nb", ctypes.c_size_t * GGML_MAX_DIMS),
    ("op", ctypes.c_int),
    ("op_params", ctypes.c_int32 * (GGML_MAX_OP_PARAMS // 4)),
    ("flags", ctypes.c_int32),
    ("src", ctypes.POINTER(GgmlTensor) * GGML_MAX_SRC),
    ("view_src", ctypes.POINTER(GgmlTensor)),
    ("view_offs", ctypes.c_size_t),
    ("data", ctypes.c_void_p),
    ("name", ctypes.c_char * GGML_MAX_NAME),
    ("extra", ctypes.c_void_p),
    ("padding", ctypes.c_char * 8),
]

_ggml = None


def ggml_lib() -> ctypes.CDLL:
    """libggml-base beside the libllama llama_cpp loads (LLAMA_CPP_LIB_PATH, else the package's lib/; already
    loaded by libllama: same handle)."""
    global _ggml
    if _ggml is None:
        import llama_cpp

        lib_dir = Path(
            os.environ.get("LLAMA_CPP_LIB_PATH") or Path(llama_cpp.__file__).resolve().parent / "lib"
        )
        lib = ctypes.CDLL(str(lib_dir / "libggml-base.so"))
        lib.ggml_backend_buffer_is_host.argtypes = [ctypes.c_void_p]
        lib.ggml_backend_buffer_is_host.restype = ctypes.c_bool
        lib.ggml_backend_tensor_get.argtypes = [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_size_t,
        ]
        lib.ggml_backend_tensor_get.restype = None
        lib.ggml_op_name.argtypes = [ctypes.c_int]
        lib.ggml_op_name.restype = ctypes.c_char_p
        lib.ggml_tensor_overhead.argtypes = []
        lib.ggml_tensor_overhead.restype = ctypes.c_size_t
        _ggml = lib
    return _ggml


def gpu_layers() -> int:
    """Layers the native tests offload: SKV_TEST_GPU_LAYERS (native/tools/gpu_check.sh sets it), else 0 (CPU)."""
    return int(os.environ.get("SKV_TEST_GPU_LAYERS") or 0)


def check_layout() -> None:
    overhead = ggml_lib().ggml_tensor_overhead()
    assert ctypes.sizeof(GgmlTensor) + GGML_OBJECT_SIZE == overhead, (
        f"ggml_tensor mirror is {ctypes.sizeof(GgmlTensor)} bytes, the library says "
        f"{overhead - GGML_OBJECT_SIZE}: update tests/eval_capture.py from ggml.h"
    )


def op_name(op: int) -> str:
    return ggml_lib().ggml_op_name(op).decode()


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """What one graph node looked like (no pointers kept past the callback except as integers)."""

    name: str
    op: str
    type: int
    ne: tuple[int, ...]
    data: int
    buffer: int
    nbytes_span: int  # bytes from data to the end of the last element (strided)
    view_src: TensorInfo | None
    src: tuple[TensorInfo | None, ...]


def _info(p, depth: int = 0) -> TensorInfo | None:
    if not p:
        return None
    t = p.contents
    span = 0
    if all(t.ne[i] > 0 for i in range(GGML_MAX_DIMS)):
        span = sum((t.ne[i] - 1) * t.nb[i] for i in range(GGML_MAX_DIMS)) + t.nb[0]
    srcs: tuple[TensorInfo | None, ...] = ()
    if depth < 3:
        srcs = tuple(_info(t.src[i], depth + 1) for i in range(3))
    return TensorInfo(
        name=t.name.decode(errors="replace"),
        op=op_name(t.op),
        type=t.type,
        ne=tuple(t.ne),
        data=t.data or 0,
        buffer=t.buffer or 0,
        nbytes_span=span,
        view_src=_info(t.view_src, depth + 1) if depth < 6 else None,
        src=srcs,
    )


def _read(t: GgmlTensor) -> np.ndarray:
    """Copy a F32/F16 tensor (any strides) into a NumPy array shaped like ggml's ne reversed ([ne3, ne2, ne1, ne0])."""
    dtype = {GGML_TYPE_F32: np.float32, GGML_TYPE_F16: np.float16, GGML_TYPE_I32: np.int32}[t.type]
    ne = [int(t.ne[i]) for i in range(GGML_MAX_DIMS)]
    nb = [int(t.nb[i]) for i in range(GGML_MAX_DIMS)]
    span = sum((ne[i] - 1) * nb[i] for i in range(GGML_MAX_DIMS)) + nb[0]
    if t.buffer and not ggml_lib().ggml_backend_buffer_is_host(t.buffer):  # a device tensor: copy it out
        raw = (ctypes.c_char * span)()
        ggml_lib().ggml_backend_tensor_get(ctypes.addressof(t), raw, 0, span)
    else:
        raw = (ctypes.c_char * span).from_address(t.data)
    base = np.frombuffer(raw, dtype=np.uint8)
    arr = np.lib.stride_tricks.as_strided(
        base.view(dtype) if nb[0] == np.dtype(dtype).itemsize and span % nb[0] == 0 else base,
        shape=ne[::-1],
        strides=nb[::-1],
    )
    return np.array(arr, dtype=np.int32 if t.type == GGML_TYPE_I32 else np.float32)


@dataclass
class Capture:
    """Eval callback recording the nodes `want(name)` selects, in graph order, for one decode call (`mark()` before
    it, `finish()` after: LowLevelContext.decode does both). Data is read for the nodes `read_data(name, op)` selects;
    for a name seen several times the last node wins (e.g. "Qcur-0": the RoPE output comes after the reshape) in
    `data`, the first in `first` (e.g. "Kcur-0" before RoPE)."""

    want: Callable[[str], bool]
    read_data: Callable[[str, str], bool] = lambda name, op: False  # (node name, op name)
    nodes: list[TensorInfo] = field(default_factory=list)
    data: dict[str, np.ndarray] = field(default_factory=dict)
    first: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from llama_cpp import llama_cpp as ll

        def cb(t_ptr, ask, _user) -> bool:
            try:
                t = ctypes.cast(t_ptr, ctypes.POINTER(GgmlTensor)).contents
                name = t.name.decode(errors="replace")
                if ask:
                    return bool(self.want(name))
                self.nodes.append(_info(ctypes.cast(t_ptr, ctypes.POINTER(GgmlTensor))))
                if self.read_data(name, op_name(t.op)):
                    self.data[name] = _read(t)
                    self.first.setdefault(name, self.data[name])
                return True
            except Exception as e:  # never raise through C
                self.errors.append(repr(e))
                return True

        self.errors: list[str] = []
        self.c_callback = ll.ggml_backend_sched_eval_callback(cb)  # keep a reference while the context lives

    def mark(self) -> None:
        """Start a new decode call."""
        self.nodes = []
        self.data = {}
        self.first = {}

    def finish(self) -> dict:
        rec = {"nodes": self.nodes, "data": self.data, "first": self.first}
        self.mark()
        return rec


class LowLevelContext:
    """A llama context opened with the low-level API so it can take cb_eval; SentenceKV requested for it when
    `skv` is given. Flash attention on, swa_full off; layers on the CPU unless SKV_TEST_GPU_LAYERS says."""

    def __init__(
        self,
        model_path: Path,
        n_ctx: int,
        capture: Capture | None,
        skv=None,
        n_batch: int = 512,
        n_threads: int = 2,
        sent_cap: int = 0,
    ) -> None:
        import llama_cpp.llama_cpp as ll

        from engine import native

        check_layout()
        from llama_cpp._logger import set_verbose

        set_verbose(False)  # as llama_cpp.Llama(verbose=False): errors only
        self.ll = ll
        mp = ll.llama_model_default_params()
        mp.n_gpu_layers = gpu_layers()
        self.model = ll.llama_model_load_from_file(str(model_path).encode(), mp)
        if not self.model:
            raise RuntimeError(f"could not load {model_path}")
        cp = ll.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = n_batch
        cp.n_ubatch = n_batch
        cp.n_threads = n_threads
        cp.n_threads_batch = n_threads
        cp.flash_attn_type = ll.LLAMA_FLASH_ATTN_TYPE_ENABLED
        cp.swa_full = False
        cp.offload_kqv = True
        self.capture = capture
        if capture is not None:
            cp.cb_eval = capture.c_callback
            cp.cb_eval_user_data = None
        if skv is not None:
            native.request(skv, sent_cap)
        self.ctx = ll.llama_init_from_model(self.model, cp)
        if not self.ctx:
            ll.llama_model_free(self.model)
            raise RuntimeError("could not create the llama context")
        self.n_vocab = ll.llama_vocab_n_tokens(ll.llama_model_get_vocab(self.model))
        self.n_past = 0

    def decode(self, tokens: Iterable[int]) -> dict | None:
        """Decode tokens (one batch, positions continue; logits of the last token). Returns the capture of this call."""
        toks = list(tokens)
        arr = (self.ll.llama_token * len(toks))(*toks)
        if self.capture is not None:
            self.capture.mark()
        rc = self.ll.llama_decode(self.ctx, self.ll.llama_batch_get_one(arr, len(toks)))
        if rc != 0:
            raise RuntimeError(f"llama_decode failed ({rc})")
        self.n_past += len(toks)
        return self.capture.finish() if self.capture is not None else None

    def logits(self) -> np.ndarray:
        ptr = self.ll.llama_get_logits_ith(self.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def close(self) -> None:
        if self.ctx:
            self.ll.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            self.ll.llama_model_free(self.model)
            self.model = None

    def __enter__(self) -> LowLevelContext:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def attention_nodes(rec: dict) -> dict[int, TensorInfo]:
    """The attention node per layer of one captured decode: the flash-attention node is unnamed ("node_N"), and
    the "kqv_out-<il>" reshape takes it as src[0]. Capture with want() covering "kqv_out-"."""
    out = {}
    for n in rec["nodes"]:
        if n.name.startswith("kqv_out-") and n.src and n.src[0] is not None:
            out[int(n.name.split("-")[1])] = n.src[0]
    return out
