"""Conversations and messages in SQLite (WAL) under the user data dir; export to Markdown or JSON.

Schema history (never renumber; add a migration step for each new version):
  1: conversations(id, title, created, updated, documents JSON list of paths),
     messages(id, conversation, role, text, created, meta JSON: tokens offsets, retrieval, stats)
"""

from __future__ import annotations

import json
import sqlite3
import time
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


class ConversationStore:
    """One connection, used on the GUI thread only (writes are small: one row per message)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / DB_NAME
        self._db = sqlite3.connect(self.path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ValueError(
                f"the conversation database {self.path} is from a newer version ({version}): update the app"
            )
        if version < 1:
            with self._db:
                self._db.executescript(
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
        with self._db:
            cur = self._db.execute(
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
        with self._db:
            self._db.execute("UPDATE conversations SET title = ? WHERE id = ?", (title, conversation_id))

    def set_documents(self, conversation_id: int, documents: list[str]) -> None:
        with self._db:
            self._db.execute(
                "UPDATE conversations SET documents = ?, updated = ? WHERE id = ?",
                (json.dumps(documents), time.time(), conversation_id),
            )

    def delete(self, conversation_id: int) -> None:
        with self._db:
            self._db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    # ------------------------------------------------------------------ messages

    def add_message(self, conversation_id: int, role: str, text: str, meta: dict | None = None) -> Message:
        if role not in ("user", "assistant"):
            raise ValueError(f"role must be 'user' or 'assistant', got {role!r}")
        now = time.time()
        with self._db:
            cur = self._db.execute(
                "INSERT INTO messages(conversation, role, text, created, meta) VALUES (?, ?, ?, ?, ?)",
                (conversation_id, role, text, now, json.dumps(meta or {})),
            )
            self._db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, conversation_id))
        return Message(int(cur.lastrowid), role, text, now, dict(meta or {}))

    def update_message(self, message_id: int, text: str, meta: dict | None = None) -> None:
        with self._db:
            self._db.execute(
                "UPDATE messages SET text = ?, meta = ? WHERE id = ?",
                (text, json.dumps(meta or {}), message_id),
            )

    def delete_message(self, message_id: int) -> None:
        with self._db:
            self._db.execute("DELETE FROM messages WHERE id = ?", (message_id,))

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
