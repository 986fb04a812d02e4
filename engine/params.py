"""Every default of the product in one place, and the SentenceKV parameters as plain values (no ctypes).

`SkvParams` and its enums mirror `struct llama_skv_params` (native/include/llama-skv.h); engine/native.py converts
them to C. The app, the CLI, the server and the benchmarks read their defaults here: change a default here and
nowhere else (its C mirror, `llama_skv_default_params()`, is checked field by field by
tests/test_native_selection.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

# ------------------------------------------------------------------------------------------ product defaults
N_CTX = 8192  # the CLI's, the server's and the benchmarks' context (tokens)
APP_N_CTX = 32768  # the app's context: a book's worth
N_THREADS = 2  # CPU threads (the machine the figures come from has 2 cores)
MAX_TOKENS = 128  # answer tokens per question (skv ask/chat, the worker, Session.ask)
APP_MAX_TOKENS = 256  # the app's longest answer (its settings)
SERVER_MAX_TOKENS = 512  # the OpenAI server's answer cap per request
SERVER_QUEUE = 16  # requests the server holds before it answers 429
SERVER_PORT = 8765  # skv serve and the app's local server
MAX_SENTENCE_LEN = 128  # longer sentences are split into pieces of at most this many tokens
# the paper's protocol options (Session.ask): how the question is read and how a generated sentence starts
QUESTION_ATTENTION_CHOICES = ("policy", "dense")
SENTENCE_START_CHOICES = ("keep", "dense")
QUESTION_ATTENTION = QUESTION_ATTENTION_CHOICES[0]
SENTENCE_START = SENTENCE_START_CHOICES[0]


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
    STACK = (
        1  # each one ending right before the open sentence and the ring: all at the same distance (InfLLM)
    )

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
    GAUSS = (
        2  # the attention mass of Gaussian keys: log n + q.m + q^2.s2 / 2 (per dimension mean and variance)
    )

    @classmethod
    def parse(cls, name: str) -> Summary:
        return _member(cls, name, "summary", "mean, bound or gauss")


class SelectAt(IntEnum):
    """When a decode step's entries are chosen (enum llama_skv_select; disk/ABI values: never renumber)."""

    LAG = 0  # before the step, from the scores through the step before (the paper's one-step lag)
    STEP = 1  # inside the step, per layer, from the step's own query (CPU build; else LAG)
    STEP_SENTENCE = 2  # the same, from the current sentence's queries and the step's own

    @classmethod
    def parse(cls, name: str) -> SelectAt:
        return _member(cls, name, "selection time", "lag, step or step_sentence")


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


def budget_problem(budget: int, sink: int, ring: int) -> str:
    """Why a budget cannot hold sink + ring and any sentence ('' when it can): the rule the C side checks too."""
    if budget <= sink + ring:
        return (
            f"budget {budget} must be larger than sink + ring ({sink} + {ring}): "
            "the budget counts them and needs room for sentences"
        )
    return ""


@dataclass(frozen=True, slots=True)
class SkvParams:
    policy: Policy = Policy.SENTENCE
    budget: int = 1024
    sink: int = 32
    ring: int = 64
    min_query_tokens: int = 1
    max_sentence_len: int = MAX_SENTENCE_LEN
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
    exclude_sink: int = 0  # 1: an entry's vector leaves out its tokens inside the sink
    select_at: SelectAt = SelectAt.LAG  # when a step's entries are chosen

    def __post_init__(self) -> None:
        for name in ("budget", "sink", "min_query_tokens", "max_sentence_len"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.dense_layers < 0:
            raise ValueError(f"dense_layers must not be negative, got {self.dense_layers}")
        if self.exclude_sink not in (0, 1):
            raise ValueError(f"exclude_sink must be 0 or 1, got {self.exclude_sink}")
        if not 0 <= self.neighbours <= 4:
            raise ValueError(f"neighbours must be 0 to 4, got {self.neighbours}")
        if self.ring < 1:
            raise ValueError(f"ring must be at least 1, got {self.ring}")
        if self.score_distance < SCORE_AUTO:
            raise ValueError(
                f"score_distance must be auto (-1), real (0) or a distance > 0, got {self.score_distance}"
            )
        problem = budget_problem(self.budget, self.sink, self.ring)
        if problem:
            raise ValueError(problem)


# the policy names users type (CLI, settings, server), the default first
POLICY_NAMES = ("sentence", "chunk", "window", "full")

# The SentenceKV defaults for every Python caller (CLI flags, benchmarks, app settings): the mirror of the native
# llama_skv_default_params(), which tests/test_native_selection.py checks field by field.
DEFAULT_PARAMS = SkvParams()
