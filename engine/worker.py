"""EngineWorker: the one thread that owns the model (a `Session`; llama.cpp is not thread-safe).

Commands go in through `submit()` (a FIFO queue); events come out through `on_event(event)`, called on the worker
thread, in order (app/bridge.py re-posts them to the GUI thread). Every command that does work (LoadModel,
OpenDocuments, Ask, SetParams) is a *run*: `submit` returns its run id, and the run ends with exactly one terminal
event (Finished, Stopped or Failed, engine/events.py). No exception leaves the thread: a failing command becomes
`Failed` with one clear sentence and the worker goes on with the next command.

Concurrency rules:
- A command submitted while another runs is queued and runs after it (an Ask during an Ask is answered next).
- `stop()` (or `submit(Stop())`) stops the running run and every run queued before the call: each ends with
  `Stopped`; commands submitted afterwards run normally. Prefill is stopped inside a chunk through llama.cpp's abort
  callback, decode between tokens.
- `shutdown()` stops everything, frees the model and joins the thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from engine import params as defaults
from engine.documents import Document, DocumentError, load_document
from engine.events import (
    DocumentsLoaded,
    ErrorEvent,
    Event,
    Failed,
    Finished,
    MemoryEvent,
    ModelLoaded,
    ParamsChanged,
    ProgressEvent,
    RetrievalEvent,
    StatsEvent,
    Stopped,
    TokenEvent,
    TurnEnded,
)
from engine.native import NativeError
from engine.params import SkvParams
from engine.rpc import RpcError
from engine.session import (
    Cancelled,
    ContextFullError,
    DocRange,
    Session,
    SessionConfig,
    SessionError,
    StepRetrieval,
    TurnRecord,
)
from engine.session_store import SessionStore

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class LoadModel:
    """Load a model (the previous one is closed first, so two never share memory)."""

    config: SessionConfig


@dataclass(frozen=True, slots=True)
class OpenDocuments:
    """Read (paths) and prefill documents; `reserve` tokens stay free for the question and the answer."""

    documents: tuple[str | Path | Document, ...]
    reserve: int = 512
    ranges: Mapping[int, DocRange] | None = (
        None  # document index -> the part to load (default: from the start)
    )
    # documents longer than the context load whole when SentenceKV remaps positions and memory allows: the context
    # is opened again at their size (the app; not the server, whose context is fixed at its start)
    whole: bool = False


@dataclass(frozen=True, slots=True)
class Ask:
    """A question after `history`, the conversation's earlier turns in the context (empty: right after the
    documents). The session keeps the turns it has in common with the history and decodes the others again
    (a reopened chat, a regenerated or edited turn); the question becomes turn len(history) + 1."""

    question: str
    answer_prefix: str = ""
    max_tokens: int = defaults.MAX_TOKENS
    temperature: float = 0.0
    ignore_eos: bool = False
    stop: tuple[str, ...] = ()  # stop strings (never part of the answer)
    history: tuple[TurnRecord, ...] = ()
    # the question does not fit after the history: drop its oldest turns until it does (the documents stay),
    # instead of failing with kind "context_full"
    drop_oldest: bool = False
    seed: int | None = None  # sample this answer from a generator seeded so (None: the session's, running on)


@dataclass(frozen=True, slots=True)
class SetParams:
    params: SkvParams


@dataclass(frozen=True, slots=True)
class Stop:
    """Not queued: stops the running run and the runs queued before it at once."""


@dataclass(frozen=True, slots=True)
class Shutdown:
    """Not queued: same as EngineWorker.shutdown() without waiting."""


Command = LoadModel | OpenDocuments | Ask | SetParams | Stop | Shutdown


def _same_turn(a: TurnRecord, b: TurnRecord) -> bool:
    """The same turn in the context: question, prefix and decoded answer (a record without tokens: its text)."""
    if a.question.strip() != b.question.strip() or a.answer_prefix != b.answer_prefix:
        return False
    if a.answer_tokens and b.answer_tokens:
        return a.answer_tokens == b.answer_tokens
    return a.answer.strip() == b.answer.strip()


_SHUTDOWN = object()  # queue sentinel


class _AbortHook:
    """llama.cpp's abort callback on one context, armed only while a prefill runs (decode steps stop between
    tokens, so they pay nothing). Keeps the ctypes callback alive as long as the context may call it."""

    def __init__(self, session: Session, should_abort: Callable[[], bool]) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self._ctx = session.llm.ctx
        self._cb = llama_cpp.ggml_abort_callback(lambda _data: bool(should_abort()))
        self._null = llama_cpp.ggml_abort_callback()

    def __enter__(self) -> _AbortHook:
        self._lib.llama_set_abort_callback(self._ctx, self._cb, None)
        return self

    def __exit__(self, *exc: object) -> None:
        self._lib.llama_set_abort_callback(self._ctx, self._null, None)


class EngineWorker:
    def __init__(
        self, on_event: Callable[[Event], None], name: str = "skv-engine", store: SessionStore | None = None
    ) -> None:
        """`store`: where prefilled document sessions are saved and restored from (None: never saved)."""
        self._on_event = on_event
        self._store = store
        self._queue: queue.Queue = queue.Queue()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # run ids and the stop watermark move together
        self._last_id = 0
        self._stop_upto = 0  # runs with an id <= this are stopped (an int: reads are atomic)
        self._closed = False
        self._session: Session | None = None
        self._prefill_tok_s = 0.0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------- any thread

    def submit(self, command: Command) -> int:
        """Queue a command; returns its run id (0 for Stop and Shutdown, which are not runs)."""
        if isinstance(command, Stop):
            self.stop()
            return 0
        if isinstance(command, Shutdown):
            self._begin_shutdown()
            return 0
        if not isinstance(command, LoadModel | OpenDocuments | Ask | SetParams):
            raise TypeError(f"not an engine command: {command!r}")
        with self._lock:
            if self._closed:
                raise RuntimeError("the engine has shut down: restart the app")
            run_id = next(self._ids)
            self._last_id = run_id
            self._queue.put((run_id, command))
        return run_id

    def stop(self) -> None:
        """Stop the running run and every run submitted before this call."""
        with self._lock:
            self._stop_upto = self._last_id

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Stop everything, free the model and join the thread; True when it ended within timeout seconds."""
        self._begin_shutdown()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _begin_shutdown(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop_upto = self._last_id
            self._queue.put(_SHUTDOWN)

    # ------------------------------------------------------------------------------------- worker thread

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _SHUTDOWN:
                break
            run_id, command = item
            self._run(run_id, command)
        self._close_session()

    def _stopping(self, run_id: int) -> bool:
        return run_id <= self._stop_upto

    def _emit(self, event: Event) -> None:
        try:
            self._on_event(event)
        except Exception:  # noqa: BLE001 - a broken listener must not kill the engine
            log.exception("engine event listener failed on %r", event)

    def _run(self, run_id: int, command: Command) -> None:
        if self._stopping(run_id):
            self._emit(Stopped(run_id, "shut down" if self._closed else "stopped before it started"))
            return
        try:
            handler = {
                LoadModel: self._load_model,
                OpenDocuments: self._open_documents,
                Ask: self._ask,
                SetParams: self._set_params,
            }[type(command)]
            terminal = handler(run_id, command)
        except Cancelled:
            terminal = Stopped(run_id, "stopped by the user")
        except Exception as e:  # noqa: BLE001 - the thread edge: every failure becomes one event
            if self._stopping(run_id):  # an aborted llama_decode surfaces as a SessionError
                terminal = Stopped(run_id, "stopped by the user")
            else:
                terminal = Failed(
                    run_id, _message(e), "context_full" if isinstance(e, ContextFullError) else ""
                )
        self._emit(terminal)

    def _need_session(self) -> Session:
        if self._session is None:
            raise SessionError("no model is loaded: load a model first")
        return self._session

    def _close_session(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            try:
                session.close()
            except Exception:  # noqa: BLE001 - freeing must not fail the next command
                log.exception("closing the session failed")

    def _memory(self, run_id: int, session: Session) -> MemoryEvent:
        m = session.memory()
        return MemoryEvent(
            run_id,
            m["host_kv_bytes"],
            m["device_skv_bytes"],
            m["full_kv_bytes"],
            session.n_past,
            session.n_ctx,
            m["device_vec_bytes"],
            m["device_stage_bytes"],
        )

    def _load_model(self, run_id: int, cmd: LoadModel) -> Finished | Stopped:
        path = Path(cmd.config.model_path)
        if not path.is_file():
            raise SessionError(f"the model file {path} does not exist: choose a GGUF file")
        self._close_session()
        self._prefill_tok_s = 0.0
        self._emit(ProgressEvent(run_id, "load", 0, 1, -1.0))
        t0 = time.perf_counter()
        session = Session(cmd.config)
        if self._stopping(run_id):
            session.close()
            return Stopped(run_id, "stopped by the user")
        self._session = session
        for warning in session.warnings:
            self._emit(ErrorEvent(run_id, warning))
        self._emit(ProgressEvent(run_id, "load", 1, 1, 0.0))
        self._emit(self._model_loaded(run_id, session, time.perf_counter() - t0))
        self._emit(self._memory(run_id, session))
        return Finished(run_id, "done")

    @staticmethod
    def _model_loaded(run_id: int, session: Session, load_s: float) -> ModelLoaded:
        path = Path(session.config.model_path)
        return ModelLoaded(
            run_id,
            path.name,
            str(path),
            session.n_ctx,
            session.info.n_layer,
            session.n_vocab,
            session.info.context_length,
            session.skv is not None,
            load_s,
        )

    def _grow_for_whole(
        self, run_id: int, session: Session, docs: list[Document], cmd: OpenDocuments
    ) -> Session:
        """With `whole`, documents longer than the context load whole when SentenceKV remaps positions (past the
        model's trained length too) and the host memory holds their K/V: the context is opened again at their size (the model
        reloads; a second ModelLoaded says so). Else, and with chosen ranges, the context stays (loaded from the
        start, the range chooser for the rest), and a note says what the whole would need."""
        if not cmd.whole or cmd.ranges or not session.config.remaps_positions:
            return session
        n_total = session.plan(docs, cmd.reserve).n_total
        need = n_total + cmd.reserve
        if need <= session.n_ctx:
            return session
        from engine.models import available_memory_bytes, estimate_memory

        n_ctx = -(-need // 256) * 256
        est = estimate_memory(session.info, n_ctx)
        avail = available_memory_bytes()
        freed = estimate_memory(session.info, session.n_ctx).total_bytes_max  # the context it replaces
        if avail is not None and est.total_bytes_max > avail + freed:
            self._emit(
                ErrorEvent(
                    run_id,
                    f"the whole of {n_total:,} tokens needs up to "
                    f"{est.total_bytes_max / 2**30:.1f} GiB ({est.describe()}), more than the "
                    f"free memory: loading what fits in {session.n_ctx:,} tokens",
                )
            )
            return session
        self._emit(ProgressEvent(run_id, "load", 0, 1, -1.0))
        t0 = time.perf_counter()
        config = dataclasses.replace(session.config, n_ctx=n_ctx)
        self._close_session()
        session = Session(config)
        self._session = session
        self._emit(ProgressEvent(run_id, "load", 1, 1, 0.0))
        self._emit(self._model_loaded(run_id, session, time.perf_counter() - t0))
        return session

    def _open_documents(self, run_id: int, cmd: OpenDocuments) -> Finished:
        session = self._need_session()
        docs = [d if isinstance(d, Document) else load_document(d) for d in cmd.documents]
        if not docs:
            raise DocumentError("no documents were given: open at least one file")
        session = self._grow_for_whole(run_id, session, docs, cmd)
        t0 = time.perf_counter()

        def progress(done: int, total: int) -> None:
            elapsed = time.perf_counter() - t0
            eta = elapsed / done * (total - done) if done > 0 else -1.0
            self._emit(ProgressEvent(run_id, "prefill", done, total, eta))

        self._prefill_tok_s = 0.0
        try:
            with _AbortHook(session, lambda: self._stopping(run_id)), self._store_warnings(run_id) as store:
                report = session.load_documents(
                    docs,
                    reserve=cmd.reserve,
                    ranges=cmd.ranges,
                    on_progress=progress,
                    should_stop=lambda: self._stopping(run_id),
                    store=store,
                )
        except BaseException:
            session.reset()  # a half-prefilled context is of no use: start clean
            raise
        self._prefill_tok_s = session.n_doc_tokens / report.prefill_s if report.prefill_s > 0 else 0.0
        table = tuple(
            (sid, sp.doc, sp.char_start, sp.char_end) for sid, sp in enumerate(session.spans) if sp.doc >= 0
        )
        self._emit(
            DocumentsLoaded(
                run_id,
                tuple(d.name for d in docs),
                report.n_tokens_total,
                report.n_tokens_loaded,
                report.truncated,
                report.prefill_s,
                report.restored,
                table,
            )
        )
        if report.truncated:
            self._emit(
                ErrorEvent(
                    run_id,
                    f"{report.n_tokens_loaded} of {report.n_tokens_total} document tokens fit "
                    f"in the context ({session.n_ctx}): loaded from the start",
                )
            )
        self._emit(self._memory(run_id, session))
        return Finished(run_id, "truncated" if report.truncated else "done")

    @contextlib.contextmanager
    def _store_warnings(self, run_id: int):
        """The session store with its warnings (not saved: disk full, folder not writable) sent as ErrorEvents of
        this run: the documents are loaded all the same."""
        if self._store is None:
            yield None
            return
        with self._store.warnings_to(lambda msg: self._emit(ErrorEvent(run_id, msg))) as store:
            yield store

    def _ask(self, run_id: int, cmd: Ask) -> Finished | Stopped:
        session = self._need_session()
        index = itertools.count()

        def on_token(tok: int, text: str, step: StepRetrieval | None) -> None:
            i = next(index)
            self._emit(TokenEvent(run_id, i, text, tok))
            if step is not None and step.n_selections > 0:
                weights = tuple((sid, n / step.n_selections) for sid, n in step.counts)
                layers = tuple(
                    (lid, tuple((sid, n / step.n_head_kv) for sid, n in picks)) for lid, picks in step.layers
                )
                self._emit(RetrievalEvent(run_id, i, weights, layers))
            self._emit(self._memory(run_id, session))

        history = self._fit_history(session, cmd)
        if cmd.seed is not None:
            session.reseed(cmd.seed)
        while True:
            try:
                self._enter_history(run_id, session, history)
                result = session.ask(
                    cmd.question,
                    answer_prefix=cmd.answer_prefix,
                    max_tokens=cmd.max_tokens,
                    temperature=cmd.temperature,
                    ignore_eos=cmd.ignore_eos,
                    stop=cmd.stop,
                    on_token=on_token,
                    should_stop=lambda: self._stopping(run_id),
                    keep_turns=len(history),
                )
                break
            except ContextFullError:
                if not (cmd.drop_oldest and history):
                    raise
                history = history[1:]  # the estimate was short: one more turn leaves the context
        if result.turn:
            self._emit(
                TurnEnded(
                    run_id,
                    result.turn,
                    tuple(result.tokens),
                    result.reason,
                    tuple((sid, sp.turn, sp.role, sp.text.strip()) for sid, sp in session.turn_entries()),
                    session.n_past,
                    session.n_ctx,
                    tuple(t.tok_end for t in session.turns),
                )
            )
        tok_s = result.decode_tokens / result.decode_s if result.decode_s > 0 else 0.0
        self._emit(StatsEvent(run_id, result.ttft_s, tok_s, self._prefill_tok_s, result.decode_tokens))
        if result.stopped or self._stopping(run_id):
            return Stopped(run_id, "stopped by the user")
        return Finished(run_id, result.reason)

    @staticmethod
    def _fit_history(session: Session, cmd: Ask) -> list[TurnRecord]:
        """The history that goes into the context: all of it, or with drop_oldest the newest turns that leave room
        for the question and its answer (the documents always stay). Refuses up front (ContextFullError) when
        the whole history does not fit and dropping is not asked for."""
        history = list(cmd.history)
        cost = [
            len(session.prompt_tokens(r.question, r.answer_prefix))
            + max(len(r.answer_tokens), len(r.answer) // 3)
            for r in history
        ]
        need = len(session.prompt_tokens(cmd.question, cmd.answer_prefix)) + cmd.max_tokens
        room = session.n_ctx - session.n_doc_tokens - need
        if sum(cost) <= room:
            return history
        if not cmd.drop_oldest:
            raise ContextFullError(
                f"the conversation ({len(history)} turns, about {sum(cost)} tokens) and this question "
                f"({need} tokens with its answer) do not fit in what the documents leave of the context "
                f"({session.n_ctx - session.n_doc_tokens} tokens): drop the oldest turns, start a new chat, or "
                "raise n_ctx",
                sum(cost) + need,
                session.n_ctx - session.n_doc_tokens,
            )
        while history and sum(cost) > room:
            history.pop(0)
            cost.pop(0)
        return history

    def _enter_history(self, run_id: int, session: Session, history: list[TurnRecord]) -> None:
        """The context as after `history`: the turns the session has in common with it stay, the rest are
        decoded again (with progress)."""
        have = session.turns
        k = 0
        while k < min(len(have), len(history)) and _same_turn(have[k].record(), history[k]):
            k += 1
        session.cut_turns(k)
        todo = history[k:]
        total = sum(len(r.answer_tokens) + len(r.question) // 4 + 8 for r in todo)
        done = 0
        t0 = time.perf_counter()
        for rec in todo:
            if self._stopping(run_id):
                raise Cancelled()
            session.replay(rec)
            done += len(rec.answer_tokens) + len(rec.question) // 4 + 8
            rate = done / max(time.perf_counter() - t0, 1e-6)
            self._emit(ProgressEvent(run_id, "replay", done, total, (total - done) / rate))

    def _set_params(self, run_id: int, cmd: SetParams) -> Finished:
        session = self._need_session()
        session.set_params(cmd.params)
        p = cmd.params
        self._emit(ParamsChanged(run_id, p.policy.name.lower(), p.budget, p.sink, p.ring))
        return Finished(run_id, "done")


def _message(e: BaseException) -> str:
    """One sentence for the user; unexpected errors are logged with their traceback."""
    if isinstance(e, SessionError | DocumentError | NativeError | RpcError | ValueError):
        return " ".join(str(e).split()) or type(e).__name__
    log.error("engine command failed", exc_info=e)
    return f"the engine hit an unexpected error ({type(e).__name__}: {e}): see the log"
