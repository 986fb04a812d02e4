"""The server's side of the engine: one EngineWorker, and one dispatcher thread that runs the requests one at a
time, in arrival order (a bounded queue; full: 429).

A request becomes engine commands against what the context already holds (llama-server's prompt cache, with the
sentence index kept):
- documents: the --doc files, then the request's system text as a document named "system"; opened (prefilled, or
  restored from the session store) only when they differ from the loaded ones;
- SetParams when the request's SentenceKV parameters differ from the current ones;
- Ask with the earlier (user, assistant) pairs as its history: the turns the context has in common with it stay,
  the others are decoded again; the last user message is the question, decoded under the policy.
`cached_tokens` counts the prompt tokens that were already in the context (or restored): the documents when they
stay, and the kept turns.

Tokens and the outcome reach the request's asyncio handler through its `Job` (call_soon_threadsafe). A cancelled
job is taken off the queue, or its run is stopped (EngineWorker.stop: between tokens, inside a prefill chunk).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from engine import params as defaults
from engine.documents import Document
from engine.events import (
    DocumentsLoaded,
    ErrorEvent,
    Event,
    Failed,
    Finished,
    MemoryEvent,
    ModelLoaded,
    RetrievalEvent,
    StatsEvent,
    Stopped,
    TokenEvent,
    TurnEnded,
    is_terminal,
)
from engine.server.errors import ApiError, invalid, server_error
from engine.server.protocol import Generation, Outcome
from engine.session import DocRange, SessionConfig, TurnRecord
from engine.session.conversation import turn_entry
from engine.session.layout import SpanInfo
from engine.session_store import SessionStore
from engine.worker import Ask, EngineWorker, LoadModel, OpenDocuments, SetParams

log = logging.getLogger(__name__)

TOP_RETRIEVED = 10


class EngineStartError(Exception):
    """The model or the --doc files could not be loaded (one sentence)."""


class Job:
    """One request on its way through the engine. `items` (on the handler's event loop) receives the answer's
    text pieces (str), then one Outcome or ApiError."""

    def __init__(self, gen: Generation, loop: asyncio.AbstractEventLoop) -> None:
        self.gen = gen
        self.items: asyncio.Queue = asyncio.Queue()
        self.cancelled = False
        self._loop = loop

    def push(self, item: str | Outcome | ApiError) -> None:
        try:
            self._loop.call_soon_threadsafe(self.items.put_nowait, item)
        except RuntimeError:  # the handler's loop has closed (the server is shutting down)
            pass


@dataclass(slots=True)
class _Loaded:
    """The documents in the context and what their sentences are."""

    key: tuple[tuple[str, str], ...]
    documents: tuple[Document, ...]
    sentences: dict[int, tuple[int, int, int]]  # sentence id -> (document index, char start, char end)
    n_prefix: int  # tokens before the first turn (BOS, the format's head, the documents)
    truncated: bool


@dataclass(slots=True)
class _Answer:
    """What the events of one Ask add up to."""

    pieces: list[str] = field(default_factory=list)
    weights: dict[int, float] = field(default_factory=dict)  # sentence id -> summed per-step weight
    steps: int = 0
    turn: TurnEnded | None = None
    stats: StatsEvent | None = None
    memory: MemoryEvent | None = None


class EngineBridge:
    def __init__(
        self,
        config: SessionConfig,
        documents: tuple[Document, ...] = (),
        ranges: Mapping[int, DocRange] | None = None,
        store: SessionStore | None = None,
        max_queue: int = defaults.SERVER_QUEUE,
        max_tokens: int = defaults.SERVER_MAX_TOKENS,
        temperature: float = 0.0,
        stop: tuple[str, ...] = (),
    ) -> None:
        """max_tokens, temperature, stop: what a request that does not say gets (stop strings add up)."""
        self.config = config
        self._max_tokens = max_tokens
        self._temperature = temperature
        self._stop = tuple(stop)
        self.model_id = Path(config.model_path).stem
        self.n_ctx = config.n_ctx
        self._base_docs = tuple(documents)
        self._ranges = dict(ranges or {})
        self._max_queue = max_queue
        self._events: queue.Queue[Event] = queue.Queue()
        self._worker = EngineWorker(self._events.put, name="skv-serve-engine", store=store)
        self._params = config.skv
        self._loaded: _Loaded | None = None
        self._turns: list[TurnRecord] = []  # the conversation in the context, with its decoded answer tokens
        self._turn_ends: tuple[int, ...] = ()
        self._lock = threading.Lock()  # the waiting queue, the running job and the cancel flags
        self._waiting: collections.deque[Job] = collections.deque()
        self._wake = threading.Condition(self._lock)
        self._running: Job | None = None
        self._closed = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------- any thread

    def start(self) -> None:
        """Load the model and prefill the --doc files (blocking); EngineStartError says why it failed."""
        terminal = self._run(LoadModel(self.config), lambda ev: self._on_model(ev))
        if not isinstance(terminal, Finished):
            raise EngineStartError(getattr(terminal, "message", "the model load was stopped"))
        if self._base_docs:
            try:
                self._open(self._base_docs, reserve=256)
            except ApiError as e:
                raise EngineStartError(f"the --doc files could not be loaded: {e.message}") from None
            if self._loaded is not None and self._loaded.truncated:
                raise EngineStartError(
                    f"the --doc files do not fit in the context ({self.n_ctx} tokens) with room for answers: "
                    "raise --n-ctx or load a part with --range"
                )
        self._thread = threading.Thread(target=self._dispatch, name="skv-serve-dispatch", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue a job (ApiError 429 when the queue is full, 503 once closed)."""
        with self._lock:
            if self._closed:
                raise ApiError(503, "the server is shutting down", "engine_unavailable", type="server_error")
            if len(self._waiting) >= self._max_queue:
                raise ApiError(
                    429,
                    f"the server's queue is full ({self._max_queue} requests wait for the model): "
                    "retry later",
                    "queue_full",
                    type="rate_limit_error",
                )
            self._waiting.append(job)
            self._wake.notify()

    def cancel(self, job: Job) -> None:
        """The client went away: drop the job from the queue, or stop its run."""
        with self._lock:
            job.cancelled = True
            if job in self._waiting:
                self._waiting.remove(job)
            elif job is self._running:
                self._worker.stop()  # the running run and the ones before it: only this job's

    def health(self) -> dict:
        with self._lock:
            return {
                "status": "ok",
                "model": self.model_id,
                "n_ctx": self.n_ctx,
                "queue": len(self._waiting),
                "running": self._running is not None,
            }

    def close(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._closed = True
            for job in self._waiting:
                job.cancelled = True
                job.push(
                    ApiError(503, "the server is shutting down", "engine_unavailable", type="server_error")
                )
            self._waiting.clear()
            if self._running is not None:
                self._running.cancelled = True
            self._wake.notify()
        self._worker.shutdown(timeout)
        if self._thread is not None:
            self._thread.join(timeout)

    # ------------------------------------------------------------------------------- dispatcher thread

    def _dispatch(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                job = self._running = self._waiting.popleft()
            try:
                job.push(self._answer(job))
            except ApiError as e:
                job.push(e)
            except Exception as e:  # noqa: BLE001 - the thread edge: a request fails, the server goes on
                log.exception("a request failed")
                job.push(
                    server_error(f"the server hit an unexpected error ({type(e).__name__}): see its log")
                )
            finally:
                with self._lock:
                    self._running = None

    def _run(self, command, on_event, job: Job | None = None):
        """Submit one command and pass its events to on_event; returns its terminal event. A cancelled job's
        command is not submitted (Stopped)."""
        with self._lock:
            if job is not None and job.cancelled:
                return Stopped(0, "cancelled by the client")
            run_id = self._worker.submit(command)
        while True:
            event = self._events.get()
            if getattr(event, "run_id", run_id) != run_id:
                continue  # a late event of an earlier run (none are expected)
            if is_terminal(event):
                return event
            if isinstance(event, ErrorEvent):
                log.warning("%s", event.message)
            on_event(event)

    def _on_model(self, event: Event) -> None:
        if isinstance(event, ModelLoaded):
            self.n_ctx = event.n_ctx

    def _open(self, documents: tuple[Document, ...], reserve: int, job: Job | None = None) -> DocumentsLoaded:
        """Open documents (prefill, or restore from the store)."""
        self._loaded = None
        self._turns, self._turn_ends = [], ()
        seen: dict = {}

        def on_event(ev: Event) -> None:
            if isinstance(ev, DocumentsLoaded):
                seen["docs"] = ev
            elif isinstance(ev, MemoryEvent) and "docs" in seen:
                seen["n_prefix"] = ev.n_past

        ranges = {i: r for i, r in self._ranges.items() if i < len(documents)}
        terminal = self._run(OpenDocuments(documents, reserve, ranges or None), on_event, job)
        self._check(terminal)
        loaded: DocumentsLoaded = seen["docs"]
        self._loaded = _Loaded(
            _key(documents),
            documents,
            {sid: (d, a, b) for sid, d, a, b in loaded.sentences},
            seen.get("n_prefix", 0),
            loaded.truncated,
        )
        return loaded

    def _check(self, terminal) -> None:
        if isinstance(terminal, Stopped):
            raise ApiError(499, "the request was cancelled", "cancelled")
        if isinstance(terminal, Failed):
            if terminal.kind == "context_full":
                raise invalid(terminal.message, "messages", "context_length_exceeded")
            raise server_error(terminal.message)

    def _answer(self, job: Job) -> Outcome:
        gen = job.gen
        max_tokens = gen.max_tokens if gen.max_tokens is not None else self._max_tokens
        params = gen.skv.apply(self._params)
        # the documents
        docs = self._base_docs + ((Document.from_text("system", gen.system),) if gen.system else ())
        if not docs:
            docs = (Document.from_text("system", ""),)  # the format's head opens the context all the same
        how, prefill_s = "kept", 0.0
        if self._loaded is None or self._loaded.key != _key(docs) or self._loaded.truncated:
            opened = self._open(docs, reserve=min(max_tokens + 64, self.n_ctx - 16), job=job)
            how = "restored" if opened.restored else "prefilled"
            prefill_s = 0.0 if opened.restored else opened.prefill_s
        assert self._loaded is not None
        if self._loaded.truncated:
            raise invalid(
                f"the system message{' and the --doc files' if self._base_docs else ''} take more of the context "
                f"({self.n_ctx} tokens) than an answer of {max_tokens} tokens leaves: shorten them, lower "
                "max_tokens, or start the server with a larger --n-ctx",
                "messages",
                "context_length_exceeded",
            )
        # the SentenceKV parameters
        if params != self._params:
            self._check(self._run(SetParams(params), lambda ev: None, job))
            self._params = params
        # the conversation: the turns the context already has keep their decoded tokens
        history: list[TurnRecord] = []
        kept = 0
        for i, (question, answer) in enumerate(gen.history):
            have = self._turns[i] if i < len(self._turns) and kept == i else None
            if (
                have is not None
                and have.question.strip() == question.strip()
                and have.answer.strip() == answer.strip()
            ):
                history.append(have)
                kept += 1
            else:
                history.append(TurnRecord(question, answer=answer, reason="eos"))
        cached = 0
        if how != "prefilled":
            cached = self._turn_ends[kept - 1] if kept else self._loaded.n_prefix
        stop = tuple(dict.fromkeys(self._stop + gen.stop))
        temperature = self._temperature if gen.temperature is None else gen.temperature
        ask = Ask(
            gen.question,
            max_tokens=max_tokens,
            temperature=temperature,
            ignore_eos=gen.skv.ignore_eos,
            stop=stop,
            history=tuple(history),
            seed=gen.seed,
        )
        acc = _Answer()
        self._turns, self._turn_ends = [], ()  # known again once the turn ends
        terminal = self._run(ask, lambda ev: self._on_answer(ev, acc, job), job)
        if acc.turn is not None:
            t = acc.turn
            self._turns = history[: t.turn - 1] + [
                TurnRecord(gen.question, t.answer_tokens, "".join(acc.pieces), reason=t.reason)
            ]
            self._turn_ends = t.turn_ends
        self._check(terminal)
        assert acc.turn is not None and isinstance(terminal, Finished)
        n_answer = len(acc.turn.answer_tokens)
        skv = {
            "retrieved": self._retrieved(acc),
            "memory": _memory(acc.memory),
            "stats": {
                "policy": params.policy.name.lower(),
                "budget": params.budget,
                "sink": params.sink,
                "ring": params.ring,
                "documents": how,
                "prefill_s": round(prefill_s, 4),
                "turns_kept": kept,
                "turns_replayed": len(history) - kept,
                "ttft_s": round(acc.stats.ttft_s, 4) if acc.stats else 0.0,
                "decode_tok_s": round(acc.stats.decode_tok_s, 3) if acc.stats else 0.0,
                "context_tokens": acc.turn.n_past,
            },
        }
        return Outcome(
            "".join(acc.pieces), terminal.reason, acc.turn.n_past - n_answer, n_answer, cached, skv
        )

    def _on_answer(self, event: Event, acc: _Answer, job: Job) -> None:
        if isinstance(event, TokenEvent):
            if event.text:
                acc.pieces.append(event.text)
                job.push(event.text)
        elif isinstance(event, RetrievalEvent):
            acc.steps += 1
            for sid, w in event.sentences:
                acc.weights[sid] = acc.weights.get(sid, 0.0) + w
        elif isinstance(event, TurnEnded):
            acc.turn = event
        elif isinstance(event, StatsEvent):
            acc.stats = event
        elif isinstance(event, MemoryEvent):
            acc.memory = event

    def _retrieved(self, acc: _Answer) -> list[dict]:
        """The sentences the answer read, as `skv ask --json` reports them: weight = the fraction of the answer's
        (step, layer, head) selections that chose them; the question's own sentences are left out."""
        if not acc.steps or acc.turn is None or self._loaded is None:
            return []
        entries = {sid: (turn, role, text) for sid, turn, role, text in acc.turn.entries}
        out = []
        for sid, total in sorted(acc.weights.items(), key=lambda kv: (-kv[1], kv[0])):
            weight = total / acc.steps
            if sid in self._loaded.sentences:
                d, a, b = self._loaded.sentences[sid]
                doc = self._loaded.documents[d]
                out.append(
                    {
                        "doc": doc.name,
                        "location": doc.location(a),
                        "text": doc.text[a:b].strip(),
                        "weight": weight,
                        "sentence": sid,
                    }
                )
            elif sid in entries and entries[sid][0] != acc.turn.turn:
                turn, role, text = entries[sid]
                out.append(turn_entry(SpanInfo(-1, 0, 0, 0, 0, text, turn, role), sid, weight))
            if len(out) >= TOP_RETRIEVED:
                break
        return out


def _key(documents: tuple[Document, ...]) -> tuple[tuple[str, str], ...]:
    return tuple((d.name, d.text) for d in documents)


def _memory(ev: MemoryEvent | None) -> dict:
    if ev is None:
        return {}
    return {
        "host_kv_bytes": ev.host_kv_bytes,
        "device_skv_bytes": ev.device_skv_bytes,
        "device_vec_bytes": ev.device_vec_bytes,
        "device_stage_bytes": ev.device_stage_bytes,
        "full_kv_bytes": ev.full_kv_bytes,
        "n_past": ev.n_past,
        "n_ctx": ev.n_ctx,
    }
