"""ctypes bindings of the SentenceKV C API (native/include/llama-skv.h) on llama_cpp's loaded library.

Raw ctypes stays in this file. Each declaration mirrors the header; `check_native()` runs first and says clearly
when the loaded libllama is a stock build without our patch.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

ERR_NOT_ENABLED = -1
ERR_INVALID = -2
ERR_INTERNAL = -3


class NativeError(RuntimeError):
    """The native SentenceKV layer is missing or failed."""


class SkvNotEnabledError(NativeError):
    """The context has no SentenceKV cache."""


def _member(cls, name: str, what: str, choices: str):
    """The member of an enum by its (case-insensitive) name; ValueError naming the choices."""
    try:
        return cls[name.upper()]
    except KeyError:
        raise ValueError(f"unknown {what} {name!r}: use {choices}") from None


class Policy(IntEnum):
    # disk/ABI values: never renumber (enum llama_skv_policy)
    FULL = 0
    WINDOW = 1
    CHUNK = 2
    SENTENCE = 3

    @classmethod
    def parse(cls, name: str) -> Policy:
        return _member(cls, name, "policy", "full, window, chunk or sentence")


class Remap(IntEnum):
    """Virtual positions for the attended tokens (enum llama_skv_remap; disk/ABI values: never renumber)."""

    OFF = 0
    ON = 1
    AUTO = 2  # on for decode steps at or past the model's trained length

    @classmethod
    def parse(cls, name: str) -> Remap:
        return _member(cls, name, "remap mode", "auto, on or off")


class Layout(IntEnum):
    """Where a remapped step puts the retrieved sentences (enum llama_skv_layout; disk/ABI values: never renumber)."""

    ORDER = 0  # in their original order, compressed, right before the open sentence and the ring
    STACK = 1  # each one ending right before the open sentence and the ring: all at the same distance (InfLLM)

    @classmethod
    def parse(cls, name: str) -> Layout:
        return _member(cls, name, "remap layout", "order or stack")


class QueryMode(IntEnum):
    """The queries an entry's score sums (enum llama_skv_query; disk/ABI values: never renumber)."""

    SENTENCE = 0  # every query of the current query sentence (the paper's mean)
    LAST = 1  # the last decoded token's query alone

    @classmethod
    def parse(cls, name: str) -> QueryMode:
        return _member(cls, name, "query mode", "sentence or last")


class Gqa(IntEnum):
    """One score per KV head from its query group (enum llama_skv_gqa; disk/ABI values: never renumber)."""

    SUM = 0  # the sum of the group's dot products
    MAX = 1  # the largest of the group's accumulated dot products (ShadowKV)
    HEADS = 2  # each query head's order, merged rank by rank into the KV head's budget

    @classmethod
    def parse(cls, name: str) -> Gqa:
        return _member(cls, name, "GQA aggregation", "sum, max or heads")


class Edge(IntEnum):
    """The last selected entry when the budget cannot hold it whole (enum llama_skv_edge)."""

    CUT = 0  # cut, its earliest tokens kept
    SKIP = 1  # skipped for the next entries that fit whole

    @classmethod
    def parse(cls, name: str) -> Edge:
        return _member(cls, name, "budget edge", "cut or skip")


class Summary(IntEnum):
    """What an entry's vector holds of its keys (enum llama_skv_summary; disk/ABI values: never renumber)."""

    MEAN = 0  # the mean key (the paper's semantic vector)
    BOUND = 1  # Quest's bound: per dimension the keys' centre and half range; score q.c + |q|.r >= every q.k

    @classmethod
    def parse(cls, name: str) -> Summary:
        return _member(cls, name, "summary", "mean or bound")


class Oracle(IntEnum):
    """Benchmarks only: select from the step's true attention (enum llama_skv_oracle). Session runs each token
    twice: once under `full` (the native cache keeps its queries), then again under the policy."""

    OFF = 0
    TOKENS = 1  # per layer and KV head, the most attended tokens
    SENTENCES = 2  # whole entries by attention mass
    TOKENS_LAG = 3  # the same from the previous step's queries (no dense pass: the policy's own lag)
    SENTENCES_LAG = 4

    @classmethod
    def parse(cls, name: str) -> Oracle:
        return _member(cls, name, "oracle", "off, tokens, sentences, tokens_lag or sentences_lag")


# score_distance (enum llama_skv_score; a value > 0 is the distance itself): where each sentence is scored from
SCORE_AUTO = -1  # a fixed distance of budget / 2 where positions can be remapped, else each sentence's own
SCORE_REAL = 0  # each sentence at its own distance (the paper's: the mean of its post-RoPE keys)


def parse_score_distance(text: str) -> int:
    """`auto`, `real` or a positive distance in tokens (the CLI's --score-distance)."""
    t = text.strip().lower()
    if t in ("auto", "real"):
        return SCORE_AUTO if t == "auto" else SCORE_REAL
    if not t.isdigit() or int(t) <= 0:
        raise ValueError(f"unknown score distance {text!r}: use auto, real or a positive number of tokens")
    return int(t)


def score_distance_name(d: int) -> str:
    return "auto" if d == SCORE_AUTO else "real" if d == SCORE_REAL else str(d)


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


@dataclass(frozen=True, slots=True)
class SkvParams:
    policy: Policy = Policy.SENTENCE
    budget: int = 1024
    sink: int = 32
    ring: int = 64
    min_query_tokens: int = 1
    max_sentence_len: int = 128
    remap: Remap = Remap.AUTO
    score_distance: int = SCORE_AUTO  # native/README.md, "Scores at a fixed distance"
    layout: Layout = Layout.ORDER  # native/README.md, "Positions past the trained length"
    # the fidelity levers (native/README.md, "Fidelity levers")
    query: QueryMode = QueryMode.SENTENCE
    gqa: Gqa = Gqa.SUM
    dense_layers: int = 0  # the first n SKV layers attend every cached token on decode steps
    edge: Edge = Edge.CUT
    neighbours: int = 0  # a selected entry brings this many entries before and after it (0..4)
    oracle: Oracle = Oracle.OFF  # benchmarks only
    summary: Summary = Summary.MEAN  # what an entry's vector holds of its keys

    def __post_init__(self) -> None:
        for name in ("budget", "sink", "min_query_tokens", "max_sentence_len"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.dense_layers < 0:
            raise ValueError(f"dense_layers must not be negative, got {self.dense_layers}")
        if not 0 <= self.neighbours <= 4:
            raise ValueError(f"neighbours must be 0 to 4, got {self.neighbours}")
        if self.ring < 1:
            raise ValueError(f"ring must be at least 1, got {self.ring}")
        if self.score_distance < SCORE_AUTO:
            raise ValueError(f"score_distance must be auto (-1), real (0) or a distance > 0, got {self.score_distance}")
        if self.budget <= self.sink + self.ring:
            raise ValueError(
                f"budget {self.budget} must be larger than sink + ring ({self.sink} + {self.ring}): "
                "the budget counts them and needs room for sentences"
            )

    def to_c(self) -> llama_skv_params:
        return llama_skv_params(
            int(self.policy), self.budget, self.sink, self.ring, self.min_query_tokens, self.max_sentence_len,
            int(self.remap), self.score_distance, int(self.layout),
            int(self.query), int(self.gqa), self.dense_layers, int(self.edge), self.neighbours, int(self.oracle),
            int(self.summary),
        )

    @classmethod
    def from_c(cls, p: llama_skv_params) -> SkvParams:
        return cls(Policy(p.policy), p.budget, p.sink, p.ring, p.min_query_tokens, p.max_sentence_len,
                   Remap(p.remap_positions), p.score_distance, Layout(p.remap_layout), QueryMode(p.query_mode),
                   Gqa(p.gqa_agg), p.dense_layers, Edge(p.edge), p.neighbours, Oracle(p.oracle),
                   Summary(p.summary))


# The SentenceKV defaults for every Python caller (CLI flags, benchmarks, app settings): the mirror of the native
# llama_skv_default_params(), which tests/test_native_selection.py checks field by field.
DEFAULT_PARAMS = SkvParams()


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
    return SkvParams.from_c(_bind().llama_skv_default_params())


def request(params: SkvParams, sent_cap: int = 0) -> None:
    """Turn SentenceKV on for the next llama context created in this process (one shot)."""
    if sent_cap < 0:
        raise ValueError(f"sent_cap must not be negative, got {sent_cap}")
    c = params.to_c()
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
        return SkvParams.from_c(out)

    def set_params(self, params: SkvParams) -> None:
        c = params.to_c()
        rc = self._lib.llama_skv_set_params(self._ctx, ctypes.byref(c))
        if rc == ERR_INVALID:
            n_layers = self.stats().n_layers
            if params.dense_layers >= n_layers:
                raise ValueError(f"dense_layers {params.dense_layers} would leave none of the {n_layers} SentenceKV "
                                 f"layers sparse: choose at most {n_layers - 1}")
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
            n = _check(self._lib.llama_skv_get_selections(self._ctx, ip, len(self._sel_ids), op, len(offs)),
                       "get_selections")
            if n <= len(self._sel_ids):
                return self._sel_ids[:n].copy(), offs.copy()
            self._sel_ids = np.zeros(2 * n, dtype=np.int32)

    def stats(self) -> SkvStats:
        out = llama_skv_stats()
        _check(self._lib.llama_skv_get_stats(self._ctx, ctypes.byref(out)), "get_stats")
        return SkvStats(**{name: getattr(out, name) for name, _ in llama_skv_stats._fields_})
