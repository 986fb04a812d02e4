"""ctypes bindings of the SentenceKV C API (native/include/llama-skv.h) on llama_cpp's loaded library.

Raw ctypes stays in this file. Each declaration mirrors the header; `check_native()` runs first and says clearly
when the loaded libllama is a stock build without our patch.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

from engine.params import (  # noqa: F401  (re-exported: the C conversion's types)
    DEFAULT_PARAMS,
    SCORE_AUTO,
    SCORE_REAL,
    Edge,
    Gqa,
    Layout,
    Oracle,
    Policy,
    QueryMode,
    Remap,
    SelectAt,
    SkvParams,
    Summary,
    parse_score_distance,
    score_distance_name,
)

ERR_NOT_ENABLED = -1
ERR_INVALID = -2
ERR_INTERNAL = -3


class NativeError(RuntimeError):
    """The native SentenceKV layer is missing or failed."""


class SkvNotEnabledError(NativeError):
    """The context has no SentenceKV cache."""


class llama_skv_params(ctypes.Structure):
    _fields_ = [
        ("policy", ctypes.c_int32),
        ("budget", ctypes.c_int32),
        ("sink", ctypes.c_int32),
        ("ring", ctypes.c_int32),
        ("min_query_tokens", ctypes.c_int32),
        ("max_sentence_len", ctypes.c_int32),
        ("remap_positions", ctypes.c_int32),
        ("score_distance", ctypes.c_int32),
        ("remap_layout", ctypes.c_int32),
        ("query_mode", ctypes.c_int32),
        ("gqa_agg", ctypes.c_int32),
        ("dense_layers", ctypes.c_int32),
        ("edge", ctypes.c_int32),
        ("neighbours", ctypes.c_int32),
        ("oracle", ctypes.c_int32),
        ("summary", ctypes.c_int32),
        ("exclude_sink", ctypes.c_int32),
        ("select_at", ctypes.c_int32),
    ]


class llama_skv_stats(ctypes.Structure):
    _fields_ = [
        ("host_kv_bytes", ctypes.c_int64),
        ("device_vec_bytes", ctypes.c_int64),
        ("device_stage_bytes", ctypes.c_int64),
        ("full_kv_bytes", ctypes.c_int64),
        ("rows_uploaded_last", ctypes.c_int64),
        ("rows_uploaded_total", ctypes.c_int64),
        ("n_skv_steps", ctypes.c_int64),
        ("n_dense_steps", ctypes.c_int64),
        ("attended_last", ctypes.c_int32),
        ("s_max", ctypes.c_int32),
        ("n_sentences", ctypes.c_int32),
        ("n_layers", ctypes.c_int32),
        ("n_head_kv", ctypes.c_int32),
        ("head_dim", ctypes.c_int32),
        ("sent_cap", ctypes.c_int32),
        ("on_device", ctypes.c_int32),
        ("t_prepare_us_last", ctypes.c_int64),
        ("t_after_us_last", ctypes.c_int64),
        ("positions_remapped", ctypes.c_int32),
        ("max_position", ctypes.c_int32),
        ("score_distance", ctypes.c_int32),
    ]


def params_to_c(p: SkvParams) -> llama_skv_params:
    return llama_skv_params(
        int(p.policy),
        p.budget,
        p.sink,
        p.ring,
        p.min_query_tokens,
        p.max_sentence_len,
        int(p.remap),
        p.score_distance,
        int(p.layout),
        int(p.query),
        int(p.gqa),
        p.dense_layers,
        int(p.edge),
        p.neighbours,
        int(p.oracle),
        int(p.summary),
        p.exclude_sink,
        int(p.select_at),
    )


def params_from_c(p: llama_skv_params) -> SkvParams:
    return SkvParams(
        Policy(p.policy),
        p.budget,
        p.sink,
        p.ring,
        p.min_query_tokens,
        p.max_sentence_len,
        Remap(p.remap_positions),
        p.score_distance,
        Layout(p.remap_layout),
        QueryMode(p.query_mode),
        Gqa(p.gqa_agg),
        p.dense_layers,
        Edge(p.edge),
        p.neighbours,
        Oracle(p.oracle),
        Summary(p.summary),
        p.exclude_sink,
        SelectAt(p.select_at),
    )


@dataclass(frozen=True, slots=True)
class SkvStats:
    host_kv_bytes: int
    device_vec_bytes: int
    device_stage_bytes: int
    full_kv_bytes: int
    rows_uploaded_last: int
    rows_uploaded_total: int
    n_skv_steps: int
    n_dense_steps: int
    attended_last: int
    s_max: int
    n_sentences: int
    n_layers: int
    n_head_kv: int
    head_dim: int
    sent_cap: int
    on_device: bool
    t_prepare_us_last: int
    t_after_us_last: int
    positions_remapped: bool  # the last staged step gave its tokens virtual positions
    max_position: int  # the largest position the last ubatch gave an attended token or the query
    score_distance: int  # the distance the vectors are scored at now (0: each sentence's own)

    @property
    def device_skv_bytes(self) -> int:
        return self.device_vec_bytes + self.device_stage_bytes


@dataclass(frozen=True, slots=True)
class Pick:
    """One index entry (a sentence, or a chunk under the chunk policy) attended in the last staged step by one layer
    and KV head."""

    entry: int
    score: float
    n_tokens: int


_P = ctypes.POINTER
_ctx_p = ctypes.c_void_p
_bound = None


def _lib():
    import llama_cpp.llama_cpp as ll  # imported late: loading libllama is slow and may fail

    return ll._lib


def _bind():
    global _bound
    if _bound is not None:
        return _bound
    lib = _lib()
    if not hasattr(lib, "llama_skv_version"):
        raise NativeError(
            "the loaded libllama has no SentenceKV (llama_skv_version missing): "
            "install the patched build with `make setup`"
        )
    i32 = ctypes.c_int32
    decl = {
        # const char * llama_skv_version(void);
        "llama_skv_version": ([], ctypes.c_char_p),
        # struct llama_skv_params llama_skv_default_params(void);
        "llama_skv_default_params": ([], llama_skv_params),
        # int32_t llama_skv_request(const struct llama_skv_params * params, int32_t sent_cap);
        "llama_skv_request": ([_P(llama_skv_params), i32], i32),
        # int32_t llama_skv_enabled(struct llama_context * ctx);
        "llama_skv_enabled": ([_ctx_p], i32),
        # int32_t llama_skv_set_params(struct llama_context * ctx, const struct llama_skv_params * params);
        "llama_skv_set_params": ([_ctx_p, _P(llama_skv_params)], i32),
        # int32_t llama_skv_get_params(struct llama_context * ctx, struct llama_skv_params * out);
        "llama_skv_get_params": ([_ctx_p, _P(llama_skv_params)], i32),
        # int32_t llama_skv_add_sentence_boundaries(struct llama_context * ctx, const int32_t * ends, int32_t n);
        "llama_skv_add_sentence_boundaries": ([_ctx_p, _P(i32), i32], i32),
        # int32_t llama_skv_get_sentences(struct llama_context * ctx, int32_t * spans, int32_t n_max);
        "llama_skv_get_sentences": ([_ctx_p, _P(i32), i32], i32),
        # int32_t llama_skv_get_layers(struct llama_context * ctx, int32_t * ids, int32_t n_max);
        "llama_skv_get_layers": ([_ctx_p, _P(i32), i32], i32),
        # int32_t llama_skv_get_selection(ctx, int32_t skv_il, int32_t head, int32_t * ids, float * scores,
        #                                 int32_t * n_tokens, int32_t n_max);
        "llama_skv_get_selection": ([_ctx_p, i32, i32, _P(i32), _P(ctypes.c_float), _P(i32), i32], i32),
        # int32_t llama_skv_get_selections(ctx, int32_t * ids, int32_t n_max, int32_t * offsets, int32_t n_offsets)
        "llama_skv_get_selections": ([_ctx_p, _P(i32), i32, _P(i32), i32], i32),
        # int32_t llama_skv_close_cached(struct llama_context * ctx);
        "llama_skv_close_cached": ([_ctx_p], i32),
        # int32_t llama_skv_get_seed(struct llama_context * ctx, float * out, int32_t n_max);
        "llama_skv_get_seed": ([_ctx_p, _P(ctypes.c_float), i32], i32),
        # int32_t llama_skv_set_seed(struct llama_context * ctx, const float * q, int32_t n);
        "llama_skv_set_seed": ([_ctx_p, _P(ctypes.c_float), i32], i32),
        # int32_t llama_skv_debug_fill(struct llama_context * ctx, int32_t n_tokens, uint32_t seed);
        "llama_skv_debug_fill": ([_ctx_p, i32, ctypes.c_uint32], i32),
        # int32_t llama_skv_arch_supported(const char * name);
        "llama_skv_arch_supported": ([ctypes.c_char_p], i32),
        # int32_t llama_skv_get_stats(struct llama_context * ctx, struct llama_skv_stats * out);
        "llama_skv_get_stats": ([_ctx_p, _P(llama_skv_stats)], i32),
    }
    for name, (argtypes, restype) in decl.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = restype
    _bound = lib
    return lib


def check_native() -> str:
    """Return the native patch version; raise NativeError if the loaded library is not ours."""
    return _bind().llama_skv_version().decode()


def native_available() -> bool:
    try:
        check_native()
        return True
    except (NativeError, OSError, ImportError):
        return False


def arch_supported(name: str) -> bool:
    """Whether the loaded llama.cpp knows this GGUF `general.architecture`."""
    return bool(_bind().llama_skv_arch_supported(name.encode()))


def debug_fill(ctx, n_tokens: int, seed: int = 0) -> None:
    """Benchmarks only: n_tokens random K/V rows at positions [0, n_tokens) of an empty plain KV cache (see
    llama_skv_debug_fill); works with SentenceKV on or off."""
    if _bind().llama_skv_debug_fill(ctx, n_tokens, seed) != n_tokens:
        raise NativeError(
            f"could not fill {n_tokens} tokens: the debug fill needs an empty, plain (not sliding-window) KV cache "
            "that large, with flash attention (see the log)"
        )


def default_params() -> SkvParams:
    return params_from_c(_bind().llama_skv_default_params())


def request(params: SkvParams, sent_cap: int = 0) -> None:
    """Turn SentenceKV on for the next llama context created in this process (one shot)."""
    if sent_cap < 0:
        raise ValueError(f"sent_cap must not be negative, got {sent_cap}")
    c = params_to_c(params)
    if _bind().llama_skv_request(ctypes.byref(c), sent_cap) != 0:
        raise ValueError(f"invalid SentenceKV parameters: {params}")


def _check(rc: int, what: str) -> int:
    if rc >= 0:
        return rc
    if rc == ERR_NOT_ENABLED:
        raise SkvNotEnabledError(f"{what}: this context has no SentenceKV cache")
    if rc == ERR_INVALID:
        raise ValueError(f"{what}: invalid argument")
    raise NativeError(f"{what}: native failure (code {rc})")


class SkvContext:
    """SentenceKV view of one llama_context (`Llama(...).ctx`). Holds no native resources of its own."""

    def __init__(self, ctx) -> None:
        self._lib = _bind()
        self._ctx = ctx
        if not self._lib.llama_skv_enabled(ctx):
            raise SkvNotEnabledError(
                "SentenceKV is not on for this context: request it before creating the context, "
                "with flash attention on and an F16 cache"
            )
        self._sel_ids = np.zeros(4096, dtype=np.int32)  # selections(): reused buffers
        self._sel_offsets: np.ndarray | None = None

    @staticmethod
    def enabled(ctx) -> bool:
        return bool(_bind().llama_skv_enabled(ctx))

    def get_params(self) -> SkvParams:
        out = llama_skv_params()
        _check(self._lib.llama_skv_get_params(self._ctx, ctypes.byref(out)), "get_params")
        return params_from_c(out)

    def set_params(self, params: SkvParams) -> None:
        c = params_to_c(params)
        rc = self._lib.llama_skv_set_params(self._ctx, ctypes.byref(c))
        if rc == ERR_INVALID:
            n_layers = self.stats().n_layers
            if params.dense_layers >= n_layers:
                raise ValueError(
                    f"dense_layers {params.dense_layers} would leave none of the {n_layers} SentenceKV "
                    f"layers sparse: choose at most {n_layers - 1}"
                )
            raise ValueError(f"SentenceKV rejected {params}: the budget must exceed sink + ring")
        _check(rc, "set_params")

    def add_boundaries(self, ends: list[int]) -> int:
        if not ends:
            return 0
        arr = (ctypes.c_int32 * len(ends))(*ends)
        rc = self._lib.llama_skv_add_sentence_boundaries(self._ctx, arr, len(ends))
        if rc == ERR_INVALID:
            raise ValueError(f"sentence ends must increase past the last one declared: {ends[:4]}...")
        return _check(rc, "add_sentence_boundaries")

    def sentences(self) -> list[tuple[int, int]]:
        n = _check(self._lib.llama_skv_get_sentences(self._ctx, None, 0), "get_sentences")
        arr = (ctypes.c_int32 * (2 * max(n, 1)))()
        n = _check(self._lib.llama_skv_get_sentences(self._ctx, arr, n), "get_sentences")
        return [(arr[2 * i], arr[2 * i + 1]) for i in range(n)]

    def close_cached(self) -> int:
        """Close the declared sentences whose tokens are all cached (after a state load); returns the entry count."""
        return _check(self._lib.llama_skv_close_cached(self._ctx), "close_cached")

    def query_seed(self) -> bytes:
        """The queries the next step's selection will use (the last prefilled token's, float32 bytes; b"" when none
        is pending): see llama_skv_get_seed. Not the sampling seed."""
        n = _check(self._lib.llama_skv_get_seed(self._ctx, None, 0), "get_seed")
        if n == 0:
            return b""
        arr = (ctypes.c_float * n)()
        _check(self._lib.llama_skv_get_seed(self._ctx, arr, n), "get_seed")
        return bytes(arr)

    def set_query_seed(self, seed: bytes) -> None:
        n = len(seed) // 4
        arr = (ctypes.c_float * n).from_buffer_copy(seed)
        if self._lib.llama_skv_set_seed(self._ctx, arr, n) != 0:
            raise ValueError(f"a selection seed of {n} floats does not fit this context")

    def layers(self) -> list[int]:
        n = _check(self._lib.llama_skv_get_layers(self._ctx, None, 0), "get_layers")
        arr = (ctypes.c_int32 * max(n, 1))()
        _check(self._lib.llama_skv_get_layers(self._ctx, arr, n), "get_layers")
        return list(arr[:n])

    def selection(self, skv_layer: int, head: int, n_max: int = 4096) -> list[Pick]:
        ids = (ctypes.c_int32 * n_max)()
        scores = (ctypes.c_float * n_max)()
        ntok = (ctypes.c_int32 * n_max)()
        n = _check(
            self._lib.llama_skv_get_selection(self._ctx, skv_layer, head, ids, scores, ntok, n_max),
            "get_selection",
        )
        return [Pick(ids[i], scores[i], ntok[i]) for i in range(min(n, n_max))]

    def selections(self) -> tuple[np.ndarray, np.ndarray]:
        """Every (SKV layer, KV head) selection of the last staged step in one call: (ids, offsets) — the ids of
        layer l, head h (descending score) are ids[offsets[l * n_head_kv + h] : offsets[l * n_head_kv + h + 1]]."""
        if self._sel_offsets is None:
            st = self.stats()
            self._sel_offsets = np.zeros(st.n_layers * st.n_head_kv + 1, dtype=np.int32)
        offs = self._sel_offsets
        op = offs.ctypes.data_as(_P(ctypes.c_int32))
        while True:
            ip = self._sel_ids.ctypes.data_as(_P(ctypes.c_int32))
            n = _check(
                self._lib.llama_skv_get_selections(self._ctx, ip, len(self._sel_ids), op, len(offs)),
                "get_selections",
            )
            if n <= len(self._sel_ids):
                return self._sel_ids[:n].copy(), offs.copy()
            self._sel_ids = np.zeros(2 * n, dtype=np.int32)

    def stats(self) -> SkvStats:
        out = llama_skv_stats()
        _check(self._lib.llama_skv_get_stats(self._ctx, ctypes.byref(out)), "get_stats")
        return SkvStats(**{name: getattr(out, name) for name, _ in llama_skv_stats._fields_})
