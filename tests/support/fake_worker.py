"""A scripted stand-in for EngineWorker (same submit/stop/shutdown, same events from its own thread) for fast UI
tests and screenshots. The end-to-end tests use the real engine."""

from __future__ import annotations

import itertools
import queue
import re
import threading
import time
from collections.abc import Callable

from engine import events as ev
from engine.documents import Document
from engine.worker import Ask, LoadModel, OpenDocuments, SetParams

ANSWER = [
    "The",
    " pass",
    " code",
    " is",
    " **",
    "gran",
    "ite",
    "-",
    "1851",
    "**",
    ".",
    " It",
    " is",
    " written",
    " on",
    " a",
    " card",
    " at",
    " the",
    " front",
    " desk",
    ".",
]


class FakeWorker:
    def __init__(
        self,
        on_event: Callable[[ev.Event], None],
        token_delay: float = 0.01,
        answer: list[str] | None = None,
        n_ctx: int = 4096,
    ) -> None:
        self._on_event = on_event
        self._delay = token_delay
        self._answer = answer or ANSWER
        self._n_ctx = n_ctx
        self._ids = itertools.count(1)
        self._last = 0
        self._stop_upto = 0
        self._queue: queue.Queue = queue.Queue()
        self._sentences: list[tuple[int, int, int, int]] = []
        self._n_past = 0
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        self.commands: list[object] = []
        self.max_turns = (
            0  # > 0: an Ask with more history than this is refused as context_full (unless drop_oldest)
        )
        self.whole_books = (
            False  # True: documents past the context load whole (the engine reopens a bigger context)
        )

    def submit(self, command) -> int:
        rid = next(self._ids)
        self._last = rid
        self.commands.append(command)
        self._queue.put((rid, command))
        return rid

    def stop(self) -> None:
        self._stop_upto = self._last

    def shutdown(self, timeout: float = 10.0) -> bool:
        self._stop_upto = self._last
        self._queue.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            rid, cmd = item
            if rid <= self._stop_upto:
                self._on_event(ev.Stopped(rid, "stopped before it started"))
                continue
            self._on_event(self._run(rid, cmd))

    def _memory(self, rid: int) -> ev.MemoryEvent:
        return ev.MemoryEvent(
            rid,
            52_428_800 + self._n_past * 4096,
            3_407_872,
            301_989_888,
            self._n_past,
            self._n_ctx,
            1_310_720,
            2_097_152,
        )

    def _run(self, rid: int, cmd) -> ev.Event:
        emit = self._on_event
        if isinstance(cmd, LoadModel):
            emit(ev.ProgressEvent(rid, "load", 0, 1, -1.0))
            if not cmd.config.model_path.endswith(".gguf"):
                return ev.Failed(rid, "the model could not be loaded: check that it is a llama.cpp GGUF file")
            emit(
                ev.ModelLoaded(
                    rid,
                    cmd.config.model_path.rsplit("/", 1)[-1],
                    cmd.config.model_path,
                    self._n_ctx,
                    18,
                    262144,
                    32768,
                    True,
                    0.1,
                )
            )
            emit(self._memory(rid))
            return ev.Finished(rid, "done")
        if isinstance(cmd, OpenDocuments):
            docs = [d for d in cmd.documents if isinstance(d, Document)]
            self._sentences = []
            sid = 1
            total = 0
            for di, d in enumerate(docs):
                for m in re.finditer(r"[^.!?\n]+[.!?]?", d.text):
                    if m.group().strip():
                        self._sentences.append((sid, di, m.start(), m.end()))
                        sid += 1
                total += len(d.text) // 4
            if self.whole_books and total > self._n_ctx - 512:  # as EngineWorker._grow_for_whole
                self._n_ctx = -(-(total + 512) // 256) * 256
                emit(
                    ev.ModelLoaded(
                        rid,
                        "fake-model.gguf",
                        "/models/fake-model.gguf",
                        self._n_ctx,
                        18,
                        262144,
                        32768,
                        True,
                        0.1,
                    )
                )
            loaded = min(total, self._n_ctx - 512)
            keep = [s for s in self._sentences if s[2] // 4 < loaded] if total > loaded else self._sentences
            for done in range(0, loaded + 1, max(1, loaded // 4)):
                if rid <= self._stop_upto:
                    return ev.Stopped(rid, "stopped by the user")
                emit(ev.ProgressEvent(rid, "prefill", done, loaded, 0.5))
                time.sleep(self._delay)
            self._n_past = loaded
            self._sentences = keep
            emit(
                ev.DocumentsLoaded(
                    rid, tuple(d.name for d in docs), total, loaded, total > loaded, 0.4, False, tuple(keep)
                )
            )
            emit(self._memory(rid))
            return ev.Finished(rid, "done")
        if (
            isinstance(cmd, Ask)
            and self.max_turns
            and len(cmd.history) > self.max_turns
            and not cmd.drop_oldest
        ):
            return ev.Failed(
                rid,
                "this turn needs 900 tokens but the conversation leaves 100 of the context: "
                "drop the oldest turns, start a new chat, or raise n_ctx",
                "context_full",
            )
        if isinstance(cmd, Ask):
            ids = [s[0] for s in self._sentences]
            base = (max(ids) + 1) if ids else 0  # the conversation's entries follow the documents'
            for i, text in enumerate(self._answer):
                if rid <= self._stop_upto:
                    return ev.Stopped(rid, "stopped by the user")
                emit(ev.TokenEvent(rid, i, text, 100 + i))
                if ids:
                    picks = sorted({ids[(i * 7 + k * 3) % len(ids)] for k in range(3)} | {ids[-4 % len(ids)]})
                    if cmd.history:  # a follow-up also reads the first turn's question
                        picks = sorted({*picks, base})
                    # gemma-3's SKV layers 5, 11 and 17 (one KV head): each takes part of the picks
                    layers = tuple(
                        (lid, tuple((p, 1.0) for k, p in enumerate(picks) if k % 3 != j or p == picks[0]))
                        for j, lid in enumerate((5, 11, 17))
                    )
                    emit(
                        ev.RetrievalEvent(
                            rid,
                            i,
                            tuple((p, 0.5 if p == ids[-4 % len(ids)] else 0.25) for p in picks),
                            layers,
                        )
                    )
                self._n_past += 1
                emit(self._memory(rid))
                time.sleep(self._delay)
            emit(ev.StatsEvent(rid, 0.31, 42.5, 1850.0, len(self._answer)))
            # the conversation so far: every earlier question and answer is one index entry after the documents
            kept = cmd.history[-self.max_turns :] if self.max_turns and cmd.drop_oldest else cmd.history
            turn = len(kept) + 1
            entries = []
            for t, rec in enumerate((*kept, None), start=1):
                q = cmd.question if rec is None else rec.question
                a = "".join(self._answer) if rec is None else rec.answer
                entries += [
                    (base + 2 * (t - 1), t, "user", q),
                    (base + 2 * (t - 1) + 1, t, "assistant", a.strip()),
                ]
            emit(
                ev.TurnEnded(
                    rid,
                    turn,
                    tuple(100 + i for i in range(len(self._answer))),
                    "eos",
                    tuple(entries),
                    self._n_past,
                    8192,
                )
            )
            return ev.Finished(rid, "eos")
        if isinstance(cmd, SetParams):
            p = cmd.params
            emit(ev.ParamsChanged(rid, p.policy.name.lower(), p.budget, p.sink, p.ring))
            return ev.Finished(rid, "done")
        return ev.Failed(rid, "unknown command")
