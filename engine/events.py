"""Events the engine emits (EngineWorker → its `on_event` callback → app/bridge.py or the CLI or a test).

Every event is a frozen, slotted dataclass of plain values (ints, floats, strings, tuples): safe to hand to another
thread, never a live engine object. Every command that does work is a *run* with a `run_id` (from
`EngineWorker.submit`); its events carry that id, come in order, and the run ends with exactly one terminal event:
`Finished`, `Stopped` or `Failed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Phase = Literal["load", "prefill", "download", "replay"]  # replay: a conversation's turns decoded again


@dataclass(frozen=True, slots=True)
class ModelLoaded:
    run_id: int
    name: str  # file name of the GGUF
    path: str
    n_ctx: int  # context size of the created context (tokens)
    n_layers: int
    n_vocab: int
    n_ctx_train: int  # the model's own context length
    skv_enabled: bool  # False: plain llama.cpp, policy full only
    load_s: float


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    run_id: int
    phase: Phase
    done: int  # units done: tokens for prefill, bytes for download, steps for load
    total: int
    eta_s: float  # estimated seconds left; -1.0 while unknown


@dataclass(frozen=True, slots=True)
class DocumentsLoaded:
    run_id: int
    names: tuple[str, ...]  # the documents, in context order
    n_tokens_total: int  # tokens of the whole documents
    n_tokens_loaded: int  # of those, the tokens in the context ("N of M tokens fit")
    truncated: bool
    prefill_s: float
    restored: bool  # True: a saved session was restored, no prefill ran
    # the sentence table: (sentence id, document index, char start, char end) for every document sentence
    sentences: tuple[tuple[int, int, int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class TokenEvent:
    run_id: int
    index: int  # 0-based position in the answer
    text: str  # UTF-8-safe piece ("" while a multi-byte character is incomplete or a stop string may begin)
    token: int  # -1: text held back until the end, released after the last token


@dataclass(frozen=True, slots=True)
class RetrievalEvent:
    """Sentences attended to produce token `index`: (sentence id, weight), weight = the fraction of the step's
    (layer, KV head) selections that chose the sentence; sorted by sentence id."""

    run_id: int
    index: int
    sentences: tuple[tuple[int, float], ...]
    # per SKV layer (model layer id): (sentence id, fraction of that layer's KV heads that chose it)
    layers: tuple[tuple[int, tuple[tuple[int, float], ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class MemoryEvent:
    run_id: int
    host_kv_bytes: int  # K/V of the SentenceKV layers in host buffers (read from ggml)
    device_skv_bytes: int  # semantic vectors + staging on the compute device
    full_kv_bytes: int  # what all layers' K/V for n_ctx would need with a dense cache
    n_past: int
    n_ctx: int
    device_vec_bytes: int = 0  # of device_skv_bytes: the semantic vectors
    device_stage_bytes: int = 0  # of device_skv_bytes: the staging rows


@dataclass(frozen=True, slots=True)
class StatsEvent:
    run_id: int
    ttft_s: float  # from the start of the ask to the first answer token
    decode_tok_s: float
    prefill_tok_s: float  # of the documents' prefill this session (0.0 when restored or none)
    decode_tokens: int


@dataclass(frozen=True, slots=True)
class TurnEnded:
    """An answer joined the conversation (after its last TokenEvent, before the terminal event): what to keep to
    rebuild the context later (the answer's tokens), and what the conversation's index entries are."""

    run_id: int
    turn: int  # 1-based, counted from the first turn in the context
    answer_tokens: tuple[int, ...]
    reason: str  # "eos", "stop", "max_tokens", "stopped"
    # every turn's entries so far, earlier turns included: (sentence id, turn, role "user"/"assistant", text)
    entries: tuple[tuple[int, int, str, str], ...]
    n_past: int  # tokens in the context after it
    n_ctx: int
    turn_ends: tuple[
        int, ...
    ] = ()  # where every turn in the context ends (one past its last token), in order


@dataclass(frozen=True, slots=True)
class ParamsChanged:
    run_id: int
    policy: str
    budget: int
    sink: int
    ring: int


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """A problem the user should see that does not by itself end the run (the terminal event follows)."""

    run_id: int
    message: str


# ------------------------------------------------------------------------------------------- terminal events


@dataclass(frozen=True, slots=True)
class Finished:
    run_id: int
    reason: str  # "done", "eos", "max_tokens", ...


@dataclass(frozen=True, slots=True)
class Stopped:
    run_id: int
    reason: str  # "stopped by the user", "stopped before it started", "shut down"


@dataclass(frozen=True, slots=True)
class Failed:
    run_id: int
    message: str  # one sentence: what happened and what to do
    kind: str = ""  # "context_full": the question would not fit after the conversation (nothing was decoded)


Terminal = Finished | Stopped | Failed
Event = (
    ModelLoaded
    | ProgressEvent
    | DocumentsLoaded
    | TokenEvent
    | RetrievalEvent
    | MemoryEvent
    | StatsEvent
    | TurnEnded
    | ParamsChanged
    | ErrorEvent
    | Finished
    | Stopped
    | Failed
)
TERMINAL = (Finished, Stopped, Failed)


def is_terminal(event: object) -> bool:
    return isinstance(event, TERMINAL)
