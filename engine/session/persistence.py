"""Saved document sessions: the snapshot of a context (llama state, tokens, spans, SentenceKV query seed), the key that
says which context it is valid for, and saving it to / restoring it from the SessionStore."""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine import native
from engine.documents import Document
from engine.session.config import SessionError
from engine.session.layout import DOC_FORMAT, DocRange, DocumentPlan, LoadReport, SpanInfo

if TYPE_CHECKING:
    from engine.session.core import Session
    from engine.session_store import SessionStore, StoredSession


@dataclass(frozen=True, slots=True)
class SessionSnapshot:
    state: bytes  # llama_state_get_data: every layer's K/V (SentenceKV host layers included) and the last logits
    input_ids: bytes  # the context's tokens, int32
    spans: tuple[SpanInfo, ...]
    n_doc_tokens: int
    documents: tuple[Document, ...]
    query_seed: bytes = b""  # the queries of the next selection (float32): set after the load, nothing is re-decoded


def store_key(session: Session, documents: list[Document], ranges: Mapping[int, DocRange] | None = None) -> str:
    """Key of a saved session: everything that makes its state valid for this context."""
    from engine import __version__
    from engine.models import model_identity
    from engine.session_store import make_key, text_sha256

    skv = session.config.skv
    return make_key({
        "model": model_identity(session.config.model_path),
        "documents": [text_sha256(d.text) for d in documents],
        "ranges": {str(i): r.key() for i, r in sorted((ranges or {}).items())},
        "n_ctx": session.n_ctx,
        "max_sentence_len": skv.max_sentence_len if skv else 128,
        "doc_format": DOC_FORMAT,
        "prompt": session.prompts.key(),
        "engine": __version__,
        "native": native.check_native() if skv is not None else "off",
    })

def save_stored(session: Session, store: SessionStore, key: str, documents: list[Document], plan: DocumentPlan) -> None:
    from pathlib import Path

    from engine.session_store import text_sha256

    snap = session.snapshot()
    meta = {
        "model": str(session.config.model_path),
        "model_name": Path(session.config.model_path).name,
        "n_ctx": session.n_ctx,
        "n_doc_tokens": session.n_doc_tokens,
        "n_tokens_total": plan.n_total,
        "n_tokens_selected": plan.n_selected,
        "n_tokens_loaded": plan.n_loaded,
        "documents": [{"name": d.name, "path": d.path, "sha256": text_sha256(d.text), "n_chars": len(d.text)}
                      for d in documents],
        "spans": [[s.doc, s.char_start, s.char_end, s.tok_start, s.tok_end] for s in session.spans],
        "headers": {str(i): s.text for i, s in enumerate(session.spans) if s.doc < 0 and s.text},
        "query_seed": base64.b64encode(snap.query_seed).decode("ascii"),
    }
    store.save(key, meta, snap.input_ids, snap.state)

def restore_stored(session: Session, store: SessionStore, stored: StoredSession, documents: list[Document],
                   reserve: int, t0: float) -> LoadReport | None:
    """Restore a saved session; None (a miss) when it leaves less than `reserve` tokens free or is unusable."""
    meta = stored.meta
    try:
        n_doc = int(meta["n_doc_tokens"])
        if n_doc + reserve > session.n_ctx:
            return None  # saved with a smaller reserve: prefill again (and overwrite it)
        headers = meta.get("headers", {})
        spans = []
        for i, (doc, c0, c1, k0, k1) in enumerate(meta["spans"]):
            text = documents[doc].text[c0:c1] if doc >= 0 else headers.get(str(i), "")
            spans.append(SpanInfo(int(doc), int(c0), int(c1), int(k0), int(k1), text))
        query_seed = base64.b64decode(meta.get("query_seed", ""), validate=True)
        snap = SessionSnapshot(stored.state, stored.input_ids, tuple(spans), n_doc, tuple(documents), query_seed)
        session.restore(snap)
    except (SessionError, KeyError, ValueError, TypeError, IndexError, binascii.Error) as e:
        store.delete(stored.key)
        store._warn(f"the saved document session could not be restored ({e}): deleted; prefilling again")
        return None
    n_sel = int(meta.get("n_tokens_selected", -1))
    n_loaded = int(meta.get("n_tokens_loaded", 0))
    return LoadReport(int(meta.get("n_tokens_total", 0)), n_loaded, n_loaded < n_sel,
                      time.perf_counter() - t0, True, n_sel)
