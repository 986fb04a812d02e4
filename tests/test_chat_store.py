"""Reliability rows of docs/RELIABILITY.md for the chat store: a damaged database is set aside (never overwritten)
and a new history starts with a banner; a database locked by another program gives a banner and loses nothing
(writes are retried in order once the lock is gone); SIGKILL during writes leaves every committed message and an
intact database."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ui import ask

from app.store import DB_NAME, ConversationStore, StoreError

pytestmark = pytest.mark.timeout(120)


def test_damaged_database_is_set_aside_and_a_new_history_starts(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    junk = b"this is not an SQLite database, but it is the user's file" * 200
    (folder / DB_NAME).write_bytes(junk)
    store = ConversationStore(folder)
    assert "damaged" in store.notice and "kept as" in store.notice
    kept = [p for p in folder.iterdir() if ".damaged-" in p.name]
    assert len(kept) == 1 and kept[0].read_bytes() == junk and kept[0].name in store.notice
    conv = store.create("fresh")
    store.add_message(conv.id, "user", "hello")
    store.close()
    again = ConversationStore(folder)
    assert again.notice == "" and [m.text for m in again.messages(conv.id)] == ["hello"]
    again.close()


def test_truncated_database_is_set_aside(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    store = ConversationStore(folder)
    conv = store.create("c")
    for i in range(200):
        store.add_message(conv.id, "user", f"message {i} " * 20)
    store.close()
    db = folder / DB_NAME
    with sqlite3.connect(db) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = db.read_bytes()
    db.write_bytes(raw[: len(raw) // 3] + b"\0" * 4096 + raw[len(raw) // 3 + 4096 :])
    store = ConversationStore(folder)
    assert "damaged" in store.notice
    assert any(p.read_bytes()[:100] == raw[:100] for p in folder.iterdir() if ".damaged-" in p.name)
    store.close()


def test_damaged_database_shows_a_banner_in_the_window(qtbot, make_window, tmp_path: Path) -> None:  # noqa: F811
    data = tmp_path / "data"
    data.mkdir()
    (data / DB_NAME).write_bytes(b"garbage" * 1000)
    w = make_window(data_dir=data)
    assert "damaged" in w.banner.text()
    assert ask(qtbot, w, "Still works?")
    assert w.conv_list.count() == 1


def _hold_write_lock(path: Path) -> sqlite3.Connection:
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    return other


def test_locked_database_write_is_a_clear_error_then_works(tmp_path: Path) -> None:
    store = ConversationStore(tmp_path / "data", timeout=0.2)
    conv = store.create("c")
    other = _hold_write_lock(store.path)
    t0 = time.perf_counter()
    with pytest.raises(StoreError, match="locked by another program"):
        store.add_message(conv.id, "user", "while locked")
    assert time.perf_counter() - t0 < 2.0
    other.execute("COMMIT")
    other.close()
    store.add_message(conv.id, "user", "after")
    assert [m.text for m in store.messages(conv.id)] == ["after"]
    store.close()


def test_locked_database_in_the_window_loses_no_message(qtbot, make_window, tmp_path: Path) -> None:  # noqa: F811
    data = tmp_path / "data"
    w = make_window(data_dir=data)
    w.store.timeout = 0.2
    w.store._db.execute("PRAGMA busy_timeout = 200")
    assert ask(qtbot, w, "First question?")
    other = _hold_write_lock(w.store.path)
    ask(qtbot, w, "Asked while locked?")
    assert "locked by another program" in w.banner.text()
    assert "Asked while locked?" in w.output_text(), "the message stays on screen"
    other.execute("COMMIT")
    other.close()
    ask(qtbot, w, "After the lock?")
    texts = [m.text for m in w.store.messages(w._conv_id)]
    assert texts[0::2] == ["First question?", "Asked while locked?", "After the lock?"]
    assert len(texts) == 6, "every answer was saved too, in order"


def test_database_locked_at_start_keeps_chats_in_memory_with_a_banner(qtbot, make_window, tmp_path) -> None:  # noqa: F811
    data = tmp_path / "data"
    ConversationStore(data).close()
    other = sqlite3.connect(data / DB_NAME, isolation_level=None)
    other.execute("PRAGMA locking_mode = EXCLUSIVE")
    other.execute("BEGIN EXCLUSIVE")
    other.execute("CREATE TABLE IF NOT EXISTS held(x)")  # takes and keeps the exclusive lock
    try:
        w = make_window(data_dir=data)
        assert "locked by another program" in w.banner.text()
        assert ask(qtbot, w, "Works anyway?")
    finally:
        other.execute("ROLLBACK")
        other.close()


_WRITER = r"""
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from app.store import ConversationStore
store = ConversationStore(Path(sys.argv[1]))
conv = store.create("load")
print("conv", conv.id, flush=True)
i = 0
while True:
    m = store.add_message(conv.id, "user" if i % 2 == 0 else "assistant", f"message {i} " + "x" * (i % 500),
                          {"i": i})
    store.update_message(m.id, f"message {i} final", {"i": i, "done": True})
    print("committed", m.id, flush=True)
    i += 1
"""


@pytest.mark.parametrize("after_s", [0.3, 0.9])
def test_sigkill_during_writes_keeps_every_committed_message(tmp_path: Path, after_s: float) -> None:
    folder = tmp_path / "data"
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(folder), str(root)], stdout=subprocess.PIPE, text=True, cwd=root
    )
    first = proc.stdout.readline()
    assert first.startswith("conv"), first
    time.sleep(after_s)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    # complete lines only: the kill may cut the last one ("committed" without its id)
    committed = [
        int(parts[1])
        for parts in (line.split() for line in out.split("\n")[:-1])
        if len(parts) == 2 and parts[0] == "committed"
    ]
    assert proc.returncode == -signal.SIGKILL and len(committed) > 10, (proc.returncode, len(committed))
    with sqlite3.connect(folder / DB_NAME) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = ConversationStore(folder)
    assert store.notice == ""
    rows = {m.id: m for m in store.messages(int(first.split()[1]))}
    missing = [i for i in committed if i not in rows]
    assert not missing, f"{len(missing)} committed messages lost"
    # each message was committed before its update: the update may be the one in flight, nothing else
    unfinished = [m.id for m in rows.values() if not m.meta.get("done")]
    assert len(unfinished) <= 1 and set(unfinished) <= {max(rows)}
    store.close()
