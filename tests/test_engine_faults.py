"""Reliability rows of docs/RELIABILITY.md on the engine side: unsupported architectures and contexts above the
model's maximum (checked before llama.cpp loads anything), stop twice, quit and model switch mid-answer, many rapid
asks, and a session store that cannot write (folder under a regular file, disk full) — each with one clear sentence,
one terminal event per run and a worker thread that lives on."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from worker_helpers import TEXT, assert_one_terminal_per_run, make_worker, tiny_config

from engine import events as ev
from engine.cli import main as cli_main
from engine.documents import Document
from engine.params import Remap, SkvParams
from engine.session import Session, SessionConfig, SessionInputError, check_model
from engine.session_store import SessionStore
from engine.worker import Ask, EngineWorker, LoadModel, OpenDocuments


def write_unknown_arch_gguf(path: Path) -> Path:
    """A well-formed GGUF whose architecture llama.cpp does not know."""
    import gguf

    w = gguf.GGUFWriter(str(path), "skv-no-such-arch")
    w.add_name("unknown architecture")
    w.add_context_length(2048)
    w.add_block_count(1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def unknown_arch(tmp_path: Path) -> Path:
    return write_unknown_arch_gguf(tmp_path / "odd.gguf")


def test_unsupported_architecture_is_refused_before_loading(unknown_arch: Path) -> None:
    with pytest.raises(SessionInputError, match="architecture 'skv-no-such-arch' .* is not supported"):
        Session(SessionConfig(str(unknown_arch), n_ctx=512))


def test_unsupported_architecture_in_the_cli_is_exit_2_with_one_line(unknown_arch, tmp_path, capsys) -> None:
    doc = tmp_path / "d.txt"
    doc.write_text("One sentence here. Another one there.", encoding="utf-8")
    code = cli_main(["ask", "--model", str(unknown_arch), "--doc", str(doc), "What?"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "not supported" in err and "Traceback" not in err, err


def test_unsupported_architecture_in_the_worker_fails_and_the_thread_survives(unknown_arch, tiny_model_path):
    worker, rec = make_worker()
    r1 = worker.submit(LoadModel(SessionConfig(str(unknown_arch), n_ctx=512)))
    r2 = worker.submit(LoadModel(tiny_config(tiny_model_path)))
    t1 = rec.terminal(r1)
    assert isinstance(t1, ev.Failed) and "not supported" in t1.message and "\n" not in t1.message
    assert isinstance(rec.terminal(r2), ev.Finished)
    assert worker.shutdown(10.0)


def test_context_above_the_model_maximum_is_a_warning(tiny_model_path, tmp_path, capsys) -> None:
    # the tiny fixture is trained for 4096 tokens
    assert check_model(tiny_model_path, 4096)[1] == []
    _, (warning,) = check_model(tiny_model_path, 8192)
    assert "above this model's trained maximum of 4096" in warning and "choose 4096 or less" in warning
    # with SentenceKV remapping positions (the default) it is a note that it does, not a warning
    _, (note,) = check_model(tiny_model_path, 8192, remap=True)
    assert "above this model's trained maximum of 4096" in note and "positions remapped" in note

    worker, rec = make_worker()
    cfg = SessionConfig(
        str(tiny_model_path), n_ctx=8192, n_threads=1, skv=SkvParams(budget=256, remap=Remap.OFF)
    )
    rid = worker.submit(LoadModel(cfg))
    assert isinstance(rec.terminal(rid), ev.Finished)
    errors = [e for e in rec.of(rid) if isinstance(e, ev.ErrorEvent)]
    assert [e.message for e in errors] == [warning]
    assert worker.shutdown(10.0)

    doc = tmp_path / "d.txt"
    doc.write_text(TEXT[:400], encoding="utf-8")
    code = cli_main(
        [
            "ask",
            "--model",
            str(tiny_model_path),
            "--n-ctx",
            "8192",
            "--threads",
            "1",
            "--doc",
            str(doc),
            "--max-tokens",
            "2",
            "--no-session-cache",
            "What?",
        ]
    )
    err = capsys.readouterr().err
    assert code == 0 and f"skv: warning: {warning}" not in err and note in err
    code = cli_main(
        [
            "ask",
            "--model",
            str(tiny_model_path),
            "--n-ctx",
            "8192",
            "--threads",
            "1",
            "--doc",
            str(doc),
            "--max-tokens",
            "2",
            "--no-session-cache",
            "--remap-positions",
            "off",
            "What?",
        ]
    )
    assert code == 0 and f"skv: warning: {warning}" in capsys.readouterr().err


@pytest.fixture
def loaded(tiny_model_path):
    """A worker with the tiny model and a short document."""
    worker, rec = make_worker()
    rec.terminal(worker.submit(LoadModel(tiny_config(tiny_model_path, n_batch=128))))
    rec.terminal(worker.submit(OpenDocuments((Document.from_text("d.txt", TEXT[:800]),), reserve=700)))
    yield worker, rec
    worker.shutdown(10.0)


def test_stop_twice_during_an_answer_is_one_stop(loaded) -> None:
    worker, rec = loaded

    def hook(event, w):
        if isinstance(event, ev.TokenEvent) and event.index == 3:
            w.stop()
            w.stop()

    rec.hook = hook
    rid = worker.submit(Ask("Go on.", max_tokens=400, ignore_eos=True))
    assert isinstance(rec.terminal(rid), ev.Stopped)
    rec.hook = None
    worker.stop()  # nothing running: no effect on later runs
    r2 = worker.submit(Ask("Again.", max_tokens=3, ignore_eos=True))
    assert rec.terminal(r2) == ev.Finished(r2, "max_tokens")
    assert_one_terminal_per_run(rec, [rid, r2])


def test_quit_mid_answer_ends_the_run_and_frees_the_model(loaded) -> None:
    worker, rec = loaded
    quit_done: list[bool] = []

    def hook(event, w):
        if isinstance(event, ev.TokenEvent) and event.index == 3 and not quit_done:
            quit_done.append(True)
            w.submit(__import__("engine.worker", fromlist=["Shutdown"]).Shutdown())

    rec.hook = hook
    rid = worker.submit(Ask("Go on.", max_tokens=400, ignore_eos=True))
    queued = worker.submit(Ask("Queued.", max_tokens=3))
    assert worker.shutdown(10.0), "the thread ends within the timeout"
    assert isinstance(rec.terminal(rid), ev.Stopped)
    assert isinstance(rec.terminal(queued), ev.Stopped)
    assert_one_terminal_per_run(rec, [rid, queued])
    assert worker._session is None, "the model was freed"
    with pytest.raises(RuntimeError, match="shut down"):
        worker.submit(Ask("after quit"))


def test_model_switch_mid_answer_stops_it_and_loads_the_other_model(
    loaded, tiny_model_path, tmp_path
) -> None:
    from tiny_gguf import TinyConfig, find_vocab_file, write_tiny_gguf

    other = write_tiny_gguf(tmp_path / "other.gguf", find_vocab_file(), TinyConfig(n_layer=3, seed=5))
    worker, rec = loaded
    switched: list[int] = []

    def hook(event, w):
        if isinstance(event, ev.TokenEvent) and event.index == 3 and not switched:
            w.stop()  # what the app does before it submits the load
            switched.append(w.submit(LoadModel(tiny_config(other))))

    rec.hook = hook
    rid = worker.submit(Ask("Go on.", max_tokens=400, ignore_eos=True))
    assert isinstance(rec.terminal(rid), ev.Stopped)
    rec.hook = None
    assert isinstance(rec.terminal(switched[0]), ev.Finished)
    loaded_ev = next(e for e in rec.of(switched[0]) if isinstance(e, ev.ModelLoaded))
    assert loaded_ev.name == "other.gguf" and loaded_ev.n_layers == 3
    r = worker.submit(Ask("Now?", max_tokens=2, ignore_eos=True))
    assert rec.terminal(r) == ev.Finished(r, "max_tokens")


def test_many_rapid_asks_run_in_order_with_one_terminal_event_each(loaded) -> None:
    worker, rec = loaded
    ids = [worker.submit(Ask(f"Question {i}?", max_tokens=2, ignore_eos=True)) for i in range(30)]
    for rid in ids:
        assert rec.terminal(rid) == ev.Finished(rid, "max_tokens")
    assert_one_terminal_per_run(rec, ids)
    order = [e.run_id for e in rec.events if ev.is_terminal(e) and e.run_id in ids]
    assert order == ids
    tokens = [e for e in rec.events if isinstance(e, ev.TokenEvent) and e.run_id in ids]
    assert len(tokens) == 2 * len(ids)


def _open_and_ask(tiny_model_path, store: SessionStore) -> tuple[list, object, object]:
    worker, rec = make_worker()
    worker = EngineWorker(rec, store=store)
    rec.worker = worker
    rec.terminal(worker.submit(LoadModel(tiny_config(tiny_model_path, n_batch=128))))
    r_docs = worker.submit(OpenDocuments((Document.from_text("d.txt", TEXT[:900]),), reserve=64))
    r_ask = worker.submit(Ask("What?", max_tokens=2, ignore_eos=True))
    t_ask = rec.terminal(r_ask)
    errors = [e.message for e in rec.of(r_docs) if isinstance(e, ev.ErrorEvent)]
    t_docs = rec.terminal(r_docs)
    assert worker.shutdown(10.0)
    return errors, t_docs, t_ask


def test_session_store_under_a_regular_file_warns_once_and_the_answer_is_given(
    tiny_model_path, tmp_path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    errors, t_docs, t_ask = _open_and_ask(tiny_model_path, SessionStore(blocker / "sessions"))
    assert isinstance(t_docs, ev.Finished) and isinstance(t_ask, ev.Finished)
    assert len(errors) == 1 and "could not save the document session" in errors[0], errors
    assert blocker.read_text() == "a file where the cache folder should be"


def test_disk_full_while_saving_a_session_keeps_nothing_half_written(tiny_model_path, tmp_path, monkeypatch):
    store = SessionStore(tmp_path / "sessions")
    real_replace = os.replace

    def full_disk(src, dst):
        if str(dst).endswith(".skvsession") or ".tmp" in str(src):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr("engine.session_store.os.replace", full_disk)
    errors, t_docs, t_ask = _open_and_ask(tiny_model_path, store)
    assert isinstance(t_docs, ev.Finished) and isinstance(t_ask, ev.Finished)
    assert len(errors) == 1 and "No space left on device" in errors[0], errors
    assert list((tmp_path / "sessions").iterdir()) == [], "the temporary file was removed"

    # with room again, the next open saves, and the one after restores without a prefill
    monkeypatch.setattr("engine.session_store.os.replace", real_replace)
    errors, _, _ = _open_and_ask(tiny_model_path, store)
    assert errors == [] and len(store.entries()) == 1


def test_truncated_gguf_is_one_clear_sentence(tiny_model_path, tmp_path, capsys) -> None:
    raw = Path(tiny_model_path).read_bytes()
    for name, data in (("head.gguf", raw[:200]), ("half.gguf", raw[: len(raw) // 2])):
        cut = tmp_path / name
        cut.write_bytes(data)
        with pytest.raises(
            SessionInputError if name == "head.gguf" else Exception, match="could not be loaded"
        ):
            Session(SessionConfig(str(cut), n_ctx=512))
        doc = tmp_path / "d.txt"
        doc.write_text("One sentence. Two sentences.", encoding="utf-8")
        code = cli_main(["ask", "--model", str(cut), "--doc", str(doc), "What?"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.count("\n") == 0 and "could not be loaded" in err, err


def test_stop_during_model_load_leaves_no_model(tiny_model_path) -> None:
    worker, rec = make_worker()

    def hook(event, w):
        if isinstance(event, ev.ProgressEvent) and event.phase == "load" and event.done == 0:
            w.stop()

    rec.hook = hook
    rid = worker.submit(LoadModel(tiny_config(tiny_model_path)))
    assert isinstance(rec.terminal(rid), ev.Stopped)
    rec.hook = None
    r2 = worker.submit(Ask("Loaded?"))
    t2 = rec.terminal(r2)
    assert isinstance(t2, ev.Failed) and "no model is loaded" in t2.message
    assert worker.shutdown(10.0)


def test_stop_while_the_session_is_saved_leaves_a_whole_file_or_none(tiny_model_path, tmp_path) -> None:
    store = SessionStore(tmp_path / "sessions")
    rec_worker, rec = make_worker()
    rec_worker.shutdown(10.0)
    worker = EngineWorker(rec, store=store)
    rec.worker = worker
    rec.terminal(worker.submit(LoadModel(tiny_config(tiny_model_path, n_batch=128))))

    def hook(event, w):
        if isinstance(event, ev.ProgressEvent) and event.phase == "prefill" and event.done == event.total:
            w.stop()  # the prefill is done: the save runs next

    rec.hook = hook
    rid = worker.submit(OpenDocuments((Document.from_text("d.txt", TEXT[:900]),), reserve=64))
    t = rec.terminal(rid)
    assert isinstance(t, ev.Finished | ev.Stopped)
    files = list((tmp_path / "sessions").glob("*")) if (tmp_path / "sessions").exists() else []
    assert all(not f.name.endswith(".tmp") for f in files)
    assert len(store.entries()) == len(files), "every file left is a whole, readable session"
    assert worker.shutdown(10.0)
