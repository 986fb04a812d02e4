"""EngineWorker on the real patched library: command/event ordering, one terminal event per run, stop during
prefill and decode, errors that leave the thread alive, shutdown."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from worker_helpers import TEXT, Recorder, assert_one_terminal_per_run, make_worker, tiny_config  # noqa: F401

from engine import events as ev
from engine.documents import Document
from engine.params import SkvParams
from engine.session import SessionConfig
from engine.worker import Ask, EngineWorker, LoadModel, OpenDocuments, SetParams, Stop


@pytest.fixture
def tiny_worker(tiny_model_path):
    worker, rec = make_worker()
    rid = worker.submit(LoadModel(tiny_config(tiny_model_path, n_batch=64)))
    assert isinstance(rec.terminal(rid), ev.Finished)
    yield worker, rec
    assert worker.shutdown(10.0)


def test_commands_run_in_order_with_ordered_events(tiny_model_path) -> None:
    worker, rec = make_worker()
    r1 = worker.submit(LoadModel(tiny_config(tiny_model_path, n_batch=128)))
    r2 = worker.submit(OpenDocuments((Document.from_text("river.txt", TEXT),), reserve=64))
    r3 = worker.submit(Ask("What is the river?", max_tokens=6, ignore_eos=True))
    r4 = worker.submit(SetParams(SkvParams(budget=128, sink=16, ring=32)))
    assert isinstance(rec.terminal(r4), ev.Finished)
    assert worker.shutdown(10.0)
    assert_one_terminal_per_run(rec, [r1, r2, r3, r4])
    assert [e.run_id for e in rec.events] == sorted(e.run_id for e in rec.events), "runs never interleave"

    kinds1 = [type(e) for e in rec.of(r1)]
    assert kinds1 == [ev.ProgressEvent, ev.ProgressEvent, ev.ModelLoaded, ev.MemoryEvent, ev.Finished]
    loaded = rec.of(r1)[2]
    assert loaded.n_ctx == 2048 and loaded.n_layers == 2 and loaded.skv_enabled

    prog = [e for e in rec.of(r2) if isinstance(e, ev.ProgressEvent)]
    assert len(prog) >= 3 and all(e.phase == "prefill" for e in prog)
    assert [e.done for e in prog] == sorted(e.done for e in prog) and prog[-1].done == prog[-1].total
    docs = next(e for e in rec.of(r2) if isinstance(e, ev.DocumentsLoaded))
    assert docs.names == ("river.txt",) and not docs.truncated and docs.n_tokens_loaded == docs.n_tokens_total
    assert len(docs.sentences) == 40 and docs.sentences[0][1:3] == (0, 0)

    tokens = [e for e in rec.of(r3) if isinstance(e, ev.TokenEvent)]
    assert [t.index for t in tokens] == list(range(6))
    retr = [e for e in rec.of(r3) if isinstance(e, ev.RetrievalEvent)]
    assert retr and all(0 < w <= 1 for r in retr for _, w in r.sentences)
    stats = next(e for e in rec.of(r3) if isinstance(e, ev.StatsEvent))
    assert stats.decode_tokens == 6 and stats.prefill_tok_s > 0
    assert rec.of(r3)[-1] == ev.Finished(r3, "max_tokens")
    assert rec.of(r4)[0] == ev.ParamsChanged(r4, "sentence", 128, 16, 32)


def test_bad_model_path_fails_clearly_and_the_thread_survives(tmp_path: Path) -> None:
    worker, rec = make_worker()
    r1 = worker.submit(LoadModel(SessionConfig(str(tmp_path / "missing.gguf"))))
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all" * 100)
    r2 = worker.submit(LoadModel(SessionConfig(str(junk))))
    r3 = worker.submit(Ask("anything?"))
    r4 = worker.submit(OpenDocuments((tmp_path / "nope.txt",)))
    for rid, words in (
        (r1, "does not exist"),
        (r2, "could not be loaded"),
        (r3, "no model is loaded"),
        (r4, "no model is loaded"),
    ):
        t = rec.terminal(rid)
        assert isinstance(t, ev.Failed) and words in t.message and "\n" not in t.message, t
    assert worker.alive
    assert worker.shutdown(10.0)


def test_document_error_is_a_failed_run(tiny_worker, tmp_path: Path) -> None:
    worker, rec = tiny_worker
    t = rec.terminal(worker.submit(OpenDocuments((tmp_path / "nope.txt",))))
    assert isinstance(t, ev.Failed) and "does not exist" in t.message


def test_stop_during_decode_returns_within_half_a_second(tiny_worker) -> None:
    worker, rec = tiny_worker
    rec.terminal(worker.submit(OpenDocuments((Document.from_text("d.txt", TEXT[:600]),), reserve=600)))
    stop_at: list[float] = []

    def hook(event, w):
        if isinstance(event, ev.TokenEvent) and event.index == 5 and not stop_at:
            stop_at.append(time.perf_counter())
            w.stop()

    rec.hook = hook
    rid = worker.submit(Ask("Go on.", max_tokens=500, ignore_eos=True))
    t = rec.terminal(rid)
    assert isinstance(t, ev.Stopped) and t.reason == "stopped by the user"
    tokens = [e for e in rec.of(rid) if isinstance(e, ev.TokenEvent)]
    assert len(tokens) == 6
    assert rec.times[rec.events.index(t)] - stop_at[0] < 0.5
    # the session is still good: the next ask runs to the end
    rec.hook = None
    assert rec.terminal(worker.submit(Ask("Again.", max_tokens=3, ignore_eos=True))) == ev.Finished(
        rid + 1, "max_tokens"
    )


def test_stop_during_prefill_between_chunks(tiny_worker) -> None:
    worker, rec = tiny_worker

    def hook(event, w):
        if isinstance(event, ev.ProgressEvent) and event.phase == "prefill" and event.done == 128:
            w.submit(Stop())

    rec.hook = hook
    rid = worker.submit(OpenDocuments((Document.from_text("d.txt", TEXT),), reserve=64))
    t = rec.terminal(rid)
    assert isinstance(t, ev.Stopped)
    assert not any(isinstance(e, ev.DocumentsLoaded) for e in rec.of(rid))
    rec.hook = None
    # nothing half-loaded stays behind: a question now sees no documents, and documents load again fine
    rid2 = worker.submit(OpenDocuments((Document.from_text("d.txt", TEXT[:500]),), reserve=64))
    assert isinstance(rec.terminal(rid2), ev.Finished)


def test_stop_also_ends_queued_runs_but_not_later_ones(tiny_worker) -> None:
    worker, rec = tiny_worker
    gate = threading.Event()

    def hook(event, w):
        if isinstance(event, ev.TokenEvent) and event.index == 0:
            gate.wait(10)  # hold the worker on the first token while the test queues more

    rec.hook = hook
    rid = worker.submit(Ask("one", max_tokens=50, ignore_eos=True))
    queued = worker.submit(Ask("two", max_tokens=2, ignore_eos=True))
    worker.stop()
    later = worker.submit(Ask("three", max_tokens=2, ignore_eos=True))
    gate.set()
    rec.hook = None
    assert isinstance(rec.terminal(rid), ev.Stopped)
    assert rec.terminal(queued) == ev.Stopped(queued, "stopped before it started")
    assert rec.terminal(later) == ev.Finished(later, "max_tokens")
    assert_one_terminal_per_run(rec, [rid, queued, later])


def test_listener_errors_do_not_kill_the_worker(tiny_model_path) -> None:
    seen = []

    def listener(event):
        seen.append(event)
        raise RuntimeError("listener bug")

    worker = EngineWorker(listener)
    worker.submit(LoadModel(tiny_config(tiny_model_path)))
    rid = worker.submit(SetParams(SkvParams(budget=200)))
    deadline = time.time() + 30
    while not any(ev.is_terminal(e) and e.run_id == rid for e in seen) and time.time() < deadline:
        time.sleep(0.02)
    assert seen[-1] == ev.Finished(rid, "done")
    assert worker.shutdown(10.0)


def test_shutdown_joins_and_refuses_new_commands(tiny_model_path) -> None:
    worker, rec = make_worker()
    r1 = worker.submit(LoadModel(tiny_config(tiny_model_path)))
    r2 = worker.submit(Ask("queued", max_tokens=2))
    assert worker.shutdown(10.0)
    assert not worker.alive
    assert_one_terminal_per_run(rec, [r1, r2])
    assert rec.of(r2)[-1] == ev.Stopped(r2, "shut down")
    with pytest.raises(RuntimeError, match="shut down"):
        worker.submit(Ask("late"))


@pytest.mark.slow
def test_stop_inside_a_prefill_chunk_on_the_default_model(default_model_path) -> None:
    """Stop lands mid-chunk (n_batch 512 ≈ 1 s on 2 cores): the abort callback hands control back within 0.5 s,
    and the session stays usable."""
    from skv_harness import book_text

    worker, rec = make_worker()
    rec.terminal(worker.submit(LoadModel(SessionConfig(str(default_model_path), n_ctx=8192))), timeout=120)
    doc = Document.from_text("alice.txt", book_text(n_chars=20_000))
    stop_at: list[float] = []

    def hook(event, w):
        if isinstance(event, ev.ProgressEvent) and event.phase == "prefill" and not stop_at:
            # stop from another thread 0.3 s into the second chunk
            def later():
                time.sleep(0.3)
                stop_at.append(time.perf_counter())
                w.stop()

            threading.Thread(target=later).start()

    rec.hook = hook
    rid = worker.submit(OpenDocuments((doc,), reserve=256))
    t = rec.terminal(rid, timeout=120)
    assert isinstance(t, ev.Stopped), t
    elapsed = rec.times[rec.events.index(t)] - stop_at[0]
    print(f"stop → Stopped: {elapsed * 1000:.0f} ms")
    assert elapsed < 0.5
    prog = [e for e in rec.of(rid) if isinstance(e, ev.ProgressEvent)]
    assert prog[-1].done < prog[-1].total
    rec.hook = None
    # the aborted prefill left nothing behind: the same documents and question give what a fresh worker gives
    answers = []
    for w, r in ((worker, rec), make_worker()):
        if w is not worker:
            r.terminal(w.submit(LoadModel(SessionConfig(str(default_model_path), n_ctx=8192))), timeout=120)
        r2 = w.submit(OpenDocuments((Document.from_text("short.txt", "The pass key is 7341. Remember it."),)))
        assert isinstance(r.terminal(r2, timeout=60), ev.Finished)
        r3 = w.submit(Ask("What is the pass key?", answer_prefix="The pass key is", max_tokens=4))
        assert isinstance(r.terminal(r3, timeout=60), ev.Finished)
        answers.append([e.token for e in r.of(r3) if isinstance(e, ev.TokenEvent)])
        assert w.shutdown(10.0)
    assert answers[0] == answers[1] and answers[0]


def test_memory_events_split_device_bytes_into_vectors_and_staging(tiny_worker) -> None:
    worker, rec = tiny_worker
    rid = worker.submit(OpenDocuments((Document.from_text("d.txt", TEXT[:900]),), reserve=64))
    rec.terminal(rid)
    m = [e for e in rec.of(rid) if isinstance(e, ev.MemoryEvent)][-1]
    assert m.device_vec_bytes > 0 and m.device_stage_bytes > 0
    assert m.device_vec_bytes + m.device_stage_bytes == m.device_skv_bytes
    assert m.host_kv_bytes > m.device_skv_bytes and m.n_past > 0


def test_an_ask_follows_its_history_replays_what_the_session_lacks_and_drops_the_oldest_turns(
    tiny_model_path,
):
    from engine.session import TurnRecord

    worker, rec = make_worker()
    cfg = SessionConfig(
        str(tiny_model_path),
        n_ctx=1024,
        n_threads=1,
        n_batch=128,
        skv=SkvParams(budget=256, sink=16, ring=32),
    )
    assert isinstance(rec.terminal(worker.submit(LoadModel(cfg))), ev.Finished)
    assert isinstance(
        rec.terminal(worker.submit(OpenDocuments((Document.from_text("r.txt", TEXT[:1500]),), reserve=64))),
        ev.Finished,
    )

    def ask(question: str, history=(), drop_oldest=False):
        rid = worker.submit(
            Ask(question, max_tokens=40, ignore_eos=True, history=tuple(history), drop_oldest=drop_oldest)
        )
        return rec.terminal(rid), rec.of(rid)

    def turn(events):
        return next(e for e in events if isinstance(e, ev.TurnEnded))

    t1, e1 = ask("What is the river?")
    first = turn(e1)
    assert isinstance(t1, ev.Finished) and first.turn == 1 and len(first.answer_tokens) == 40
    r1 = TurnRecord("What is the river?", first.answer_tokens)
    t2, e2 = ask("And the mill?", [r1])
    assert turn(e2).turn == 2 and not any(isinstance(e, ev.ProgressEvent) for e in e2)  # turn 1 was there
    assert {(t, role) for _, t, role, _ in turn(e2).entries} >= {(1, "user"), (1, "assistant"), (2, "user")}
    r2 = TurnRecord("And the mill?", turn(e2).answer_tokens)
    # a history the session lacks (another chat): decoded again, with progress, before the question
    other = TurnRecord("Something else?", tuple(first.answer_tokens[:10]))
    _, e3 = ask("And now?", [other, r2])
    assert turn(e3).turn == 3 and [e.phase for e in e3 if isinstance(e, ev.ProgressEvent)] == [
        "replay",
        "replay",
    ]
    # a history that leaves no room: refused up front (kind context_full), or fitted by dropping the oldest turns
    long = [TurnRecord(f"Question {i}?", tuple(first.answer_tokens) * 3) for i in range(6)]
    t4, e4 = ask("Last one?", long)
    assert isinstance(t4, ev.Failed) and t4.kind == "context_full" and "drop the oldest turns" in t4.message
    t5, e5 = ask("Last one?", long, drop_oldest=True)
    assert isinstance(t5, ev.Finished) and 1 < turn(e5).turn < len(long) + 1
    assert turn(e5).n_past <= turn(e5).n_ctx
    assert worker.shutdown(10.0)
