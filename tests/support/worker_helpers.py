"""Helpers for tests of the engine worker: an event recorder, a worker wired to it, the tiny model's config."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from engine import events as ev
from engine.params import SkvParams
from engine.session import SessionConfig
from engine.worker import EngineWorker

TEXT = " ".join(f"Sentence number {i} tells about the river and the hill." for i in range(40))


class Recorder:
    """Collects events; `hook(event, worker)` runs on the worker thread for tests that react to an event."""

    def __init__(self, hook=None) -> None:
        self.events: list[object] = []
        self.times: list[float] = []
        self.cond = threading.Condition()
        self.hook = hook
        self.worker: EngineWorker | None = None

    def __call__(self, event: object) -> None:
        with self.cond:
            self.events.append(event)
            self.times.append(time.perf_counter())
            self.cond.notify_all()
        if self.hook is not None:
            self.hook(event, self.worker)

    def terminal(self, run_id: int, timeout: float = 60.0) -> object:
        with self.cond:
            ok = self.cond.wait_for(
                lambda: any(ev.is_terminal(e) and e.run_id == run_id for e in self.events), timeout
            )
        assert ok, f"run {run_id} did not end: {self.events[-5:]}"
        return next(e for e in self.events if ev.is_terminal(e) and e.run_id == run_id)

    def of(self, run_id: int) -> list[object]:
        return [e for e in self.events if e.run_id == run_id]


def make_worker(hook=None) -> tuple[EngineWorker, Recorder]:
    rec = Recorder(hook)
    worker = EngineWorker(rec)
    rec.worker = worker
    return worker, rec


def tiny_config(path: Path, n_batch: int = 512) -> SessionConfig:
    # one thread: the test machine's 2 cores are shared, and spinning llama.cpp threads slow down under contention
    return SessionConfig(
        str(path), n_ctx=2048, n_threads=1, n_batch=n_batch, skv=SkvParams(budget=256, sink=16, ring=32)
    )


def assert_one_terminal_per_run(rec: Recorder, run_ids: list[int]) -> None:
    for rid in run_ids:
        kinds = [e for e in rec.of(rid) if ev.is_terminal(e)]
        assert len(kinds) == 1, (rid, kinds)
        assert ev.is_terminal(rec.of(rid)[-1]), "the terminal event is the run's last"
