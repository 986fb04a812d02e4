"""Conversations and messages in SQLite (WAL) under the user data dir; export to Markdown or JSON.

Schema history (never renumber; add a migration step for each new version):
  1: conversations(id, title, created, updated, documents JSON list of paths),
     messages(id, conversation, role, text, created, meta JSON: tokens offsets, retrieval, stats)
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA_VERSION = 1
DB_NAME = "conversations.sqlite3"


@dataclass(slots=True)
class Message:
    id: int
    role: str  # "user" or "assistant"
    text: str
    created: float
    meta: dict = field(default_factory=dict)


@dataclass(slots=True)
class Conversation:
    id: int
    title: str
    created: float
    updated: float
    documents: list[str] = field(default_factory=list)


class StoreError(Exception):
    """A chat-history operation failed; the message is one sentence saying what to do."""


def _locked(e: sqlite3.Error) -> bool:
    text = str(e).lower()
    return "locked" in text or "busy" in text


class ConversationStore:
    """One connection, used on the GUI thread only (writes are small: one row per message; each is one transaction,
    so a crash loses at most the write in flight).

    A damaged file is never overwritten: it is renamed aside (`notice` says where) and a new history starts. A file
    another program holds locked raises StoreError on open (the window then keeps this session's chats in memory)
    and on writes after `timeout` seconds (the window retries them)."""

    def __init__(self, folder: Path | None, timeout: float = 1.0) -> None:
        self.notice = ""  # one sentence for the UI when the history had to be set aside
        self.timeout = timeout
        if folder is None:  # in memory: nothing is kept after the window closes
            self.path = Path(":memory:")
            self._db = self._open(":memory:")
            return
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / DB_NAME
        try:
            self._db = self._open(self.path)
        except sqlite3.DatabaseError as e:
            if _locked(e):
                raise StoreError(
                    f"the chat history {self.path} is locked by another program: close it (or another "
                    "SentenceKV window) and restart; chats of this window are not saved"
                ) from None
            kept = self._set_aside()
            self.notice = f"the chat history file was damaged ({e}); it was kept as {kept.name} and a new history started"
            self._db = self._open(self.path)

    def _open(self, where) -> sqlite3.Connection:
        db = sqlite3.connect(where, timeout=self.timeout)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA foreign_keys=ON")
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"integrity check: {check}")
            self._migrate(db)
        except BaseException:
            db.close()
            raise
        return db

    def _set_aside(self) -> Path:
        """Rename the damaged database (and its WAL files) out of the way; nothing is deleted."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        kept = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        n = 1
        while kept.exists():
            kept = self.path.with_name(f"{self.path.name}.damaged-{stamp}-{n}")
            n += 1
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                src.rename(Path(str(kept) + suffix))
        return kept

    @contextmanager
    def _write(self):
        """One transaction; a lock or I/O failure becomes a StoreError (nothing half-written: it rolls back)."""
        try:
            with self._db:
                yield self._db
        except sqlite3.OperationalError as e:
            why = "it is locked by another program" if _locked(e) else str(e)
            raise StoreError(
                f"the chat could not be saved ({why}): it stays on screen and is saved with the next message"
            ) from None

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ValueError(
                f"the conversation database {self.path} is from a newer version ({version}): update the app"
            )
        if version < 1:
            with db:
                db.executescript(
                    """
                    CREATE TABLE conversations (
                        id INTEGER PRIMARY KEY, title TEXT NOT NULL, created REAL NOT NULL,
                        updated REAL NOT NULL, documents TEXT NOT NULL DEFAULT '[]');
                    CREATE TABLE messages (
                        id INTEGER PRIMARY KEY,
                        conversation INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
                        role TEXT NOT NULL, text TEXT NOT NULL, created REAL NOT NULL,
                        meta TEXT NOT NULL DEFAULT '{}');
                    CREATE INDEX messages_by_conversation ON messages(conversation, id);
                    PRAGMA user_version = 1;
                    """
                )

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ conversations

    def create(self, title: str = "New chat", documents: list[str] | None = None) -> Conversation:
        now = time.time()
        docs = list(documents or [])
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO conversations(title, created, updated, documents) VALUES (?, ?, ?, ?)",
                (title, now, now, json.dumps(docs)),
            )
        return Conversation(int(cur.lastrowid), title, now, now, docs)

    def conversations(self) -> list[Conversation]:
        rows = self._db.execute(
            "SELECT id, title, created, updated, documents FROM conversations ORDER BY updated DESC, id DESC"
        ).fetchall()
        return [Conversation(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    def get(self, conversation_id: int) -> Conversation | None:
        r = self._db.execute(
            "SELECT id, title, created, updated, documents FROM conversations WHERE id = ?",
            (conversation_id,),
        ).fetchone()
        return Conversation(r[0], r[1], r[2], r[3], json.loads(r[4])) if r else None

    def rename(self, conversation_id: int, title: str) -> None:
        with self._write() as db:
            db.execute("UPDATE conversations SET title = ? WHERE id = ?", (title, conversation_id))

    def set_documents(self, conversation_id: int, documents: list[str]) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE conversations SET documents = ?, updated = ? WHERE id = ?",
                (json.dumps(documents), time.time(), conversation_id),
            )

    def delete(self, conversation_id: int) -> None:
        with self._write() as db:
            db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    # ------------------------------------------------------------------ messages

    def add_message(self, conversation_id: int, role: str, text: str, meta: dict | None = None) -> Message:
        if role not in ("user", "assistant"):
            raise ValueError(f"role must be 'user' or 'assistant', got {role!r}")
        now = time.time()
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO messages(conversation, role, text, created, meta) VALUES (?, ?, ?, ?, ?)",
                (conversation_id, role, text, now, json.dumps(meta or {})),
            )
            db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, conversation_id))
        return Message(int(cur.lastrowid), role, text, now, dict(meta or {}))

    def update_message(self, message_id: int, text: str, meta: dict | None = None) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE messages SET text = ?, meta = ? WHERE id = ?",
                (text, json.dumps(meta or {}), message_id),
            )

    def delete_message(self, message_id: int) -> None:
        with self._write() as db:
            db.execute("DELETE FROM messages WHERE id = ?", (message_id,))

    def messages(self, conversation_id: int) -> list[Message]:
        rows = self._db.execute(
            "SELECT id, role, text, created, meta FROM messages WHERE conversation = ? ORDER BY id",
            (conversation_id,),
        ).fetchall()
        return [Message(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]


# ---------------------------------------------------------------------------------------------- export


def export_markdown(conv: Conversation, messages: list[Message]) -> str:
    lines = [f"# {conv.title}", ""]
    if conv.documents:
        lines += ["Documents: " + ", ".join(Path(d).name for d in conv.documents), ""]
    for m in messages:
        who = "You" if m.role == "user" else "Assistant"
        lines += [f"**{who}:**", "", m.text.strip(), ""]
        top = m.meta.get("top") or []
        if top:
            lines.append("Sources:")
            lines += [f"- {t['doc']}, {t['location']}: “{t['text']}” ({t['weight']:.0%})" for t in top[:5]]
            lines.append("")
    return "\n".join(lines)


def export_json(conv: Conversation, messages: list[Message]) -> str:
    return json.dumps(
        {
            "format": "sentencekv-conversation",
            "version": SCHEMA_VERSION,
            "title": conv.title,
            "created": conv.created,
            "documents": conv.documents,
            "messages": [
                {"role": m.role, "text": m.text, "created": m.created, "sources": m.meta.get("top", [])}
                for m in messages
            ],
        },
        indent=2,
        ensure_ascii=False,
    )
