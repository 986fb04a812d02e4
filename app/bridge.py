"""EngineBridge: the UI's only way into the engine (docs/STYLE.md, rule 3).

The EngineWorker calls `dispatch(event)` on its own thread; the bridge emits one Qt signal per event type from that
thread. Every receiver lives on the GUI thread, so Qt queues the call (an AutoConnection across threads is a
QueuedConnection): UI models change only on the GUI thread, and the engine thread never waits for the UI.

Commands go the other way through `submit()`, which only puts them on the worker's queue and never blocks.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QObject, Signal

from engine import events as ev
from engine.worker import Command, EngineWorker

WorkerFactory = Callable[[Callable[[ev.Event], None]], EngineWorker]


class EngineBridge(QObject):
    """Owns an EngineWorker (or any object with its submit/stop/shutdown, such as a test's fake) and re-emits its
    events as signals. Every signal carries the event dataclass itself: frozen plain values, safe to share."""

    model_loaded = Signal(object)  # ev.ModelLoaded
    progress = Signal(object)  # ev.ProgressEvent
    documents_loaded = Signal(object)  # ev.DocumentsLoaded
    token = Signal(object)  # ev.TokenEvent
    retrieval = Signal(object)  # ev.RetrievalEvent
    memory = Signal(object)  # ev.MemoryEvent
    stats = Signal(object)  # ev.StatsEvent
    turn_ended = Signal(object)  # ev.TurnEnded
    params_changed = Signal(object)  # ev.ParamsChanged
    error = Signal(object)  # ev.ErrorEvent
    finished = Signal(object)  # ev.Finished
    stopped = Signal(object)  # ev.Stopped
    failed = Signal(object)  # ev.Failed
    run_ended = Signal(object)  # any terminal event, after its own signal

    def __init__(self, worker_factory: WorkerFactory | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._signals: dict[type, Signal] = {
            ev.ModelLoaded: self.model_loaded,
            ev.ProgressEvent: self.progress,
            ev.DocumentsLoaded: self.documents_loaded,
            ev.TokenEvent: self.token,
            ev.RetrievalEvent: self.retrieval,
            ev.MemoryEvent: self.memory,
            ev.StatsEvent: self.stats,
            ev.TurnEnded: self.turn_ended,
            ev.ParamsChanged: self.params_changed,
            ev.ErrorEvent: self.error,
            ev.Finished: self.finished,
            ev.Stopped: self.stopped,
            ev.Failed: self.failed,
        }
        factory = worker_factory or (lambda on_event: EngineWorker(on_event))
        self._worker = factory(self.dispatch)
        self._closed = False

    # ------------------------------------------------------------------ engine thread

    def dispatch(self, event: ev.Event) -> None:
        """Called by the worker on its thread: emit the event's signal (queued to the GUI thread's receivers)."""
        if self._closed:
            return
        signal = self._signals.get(type(event))
        if signal is None:
            return
        signal.emit(event)
        if ev.is_terminal(event):
            self.run_ended.emit(event)

    # ------------------------------------------------------------------ GUI thread

    def submit(self, command: Command) -> int:
        """Queue a command; its run id, or 0 when the engine has shut down (the UI shows a failure instead)."""
        try:
            return self._worker.submit(command)
        except RuntimeError:
            return 0

    def stop(self) -> None:
        """Stop the running run (prefill or decode) and everything queued before it; returns at once."""
        self._worker.stop()

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Stop the engine and join its thread; no signal is emitted afterwards."""
        if self._closed:
            return True
        self._closed = True
        return self._worker.shutdown(timeout)
