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
from engine import params as defaults
from engine.documents import Document
from engine.session.config import SessionError
from engine.session.layout import DOC_FORMAT, DocRange, DocumentPlan, LoadReport, SpanInfo

if TYPE_CHECKING:
    from engine.session.core import Session
    from engine.session_store import SessionStore, StoredSession


@dataclass(frozen=True, slots=True)
class SessionSnapshot:
    state: (
        bytes  # llama_state_get_data: every layer's K/V (SentenceKV host layers included) and the last logits
    )
    input_ids: bytes  # the context's tokens, int32
    spans: tuple[SpanInfo, ...]
    n_doc_tokens: int
    documents: tuple[Document, ...]
    query_seed: bytes = (
        b""  # the queries of the next selection (float32): set after the load, nothing is re-decoded
    )


def store_key(
    session: Session, documents: list[Document], ranges: Mapping[int, DocRange] | None = None
) -> str:
    """Key of a saved session: everything that makes its state valid for this context."""
    from engine import __version__
    from engine.models import model_identity
    from engine.session_store import make_key, text_sha256

    skv = session.config.skv
    return make_key(
        {
            "model": model_identity(session.config.model_path),
            "documents": [text_sha256(d.text) for d in documents],
            "ranges": {str(i): r.key() for i, r in sorted((ranges or {}).items())},
            "n_ctx": session.n_ctx,
            "max_sentence_len": skv.max_sentence_len if skv else defaults.MAX_SENTENCE_LEN,
            "doc_format": DOC_FORMAT,
            "prompt": session.prompts.key(),
            "engine": __version__,
            "native": native.check_native() if skv is not None else "off",
        }
    )


def documents_meta(documents: list[Document]) -> list[dict]:
    """What a saved session records of its documents (the store lists them; the key holds their hashes)."""
    from engine.session_store import text_sha256

    return [
        {"name": d.name, "path": d.path, "sha256": text_sha256(d.text), "n_chars": len(d.text)}
        for d in documents
    ]


def save_stored(
    session: Session, store: SessionStore, key: str, documents: list[Document], plan: DocumentPlan
) -> None:
    from pathlib import Path

    snap = session.snapshot()
    meta = {
        "model": str(session.config.model_path),
        "model_name": Path(session.config.model_path).name,
        "n_ctx": session.n_ctx,
        "n_doc_tokens": session.n_doc_tokens,
        "n_tokens_total": plan.n_total,
        "n_tokens_selected": plan.n_selected,
        "n_tokens_loaded": plan.n_loaded,
        "documents": documents_meta(documents),
        "spans": [[s.doc, s.char_start, s.char_end, s.tok_start, s.tok_end] for s in session.spans],
        "headers": {str(i): s.text for i, s in enumerate(session.spans) if s.doc < 0 and s.text},
        "query_seed": base64.b64encode(snap.query_seed).decode("ascii"),
    }
    store.save(key, meta, snap.input_ids, snap.state)


def restore_stored(
    session: Session,
    store: SessionStore,
    stored: StoredSession,
    documents: list[Document],
    reserve: int,
    t0: float,
) -> LoadReport | None:
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
        snap = SessionSnapshot(
            stored.state, stored.input_ids, tuple(spans), n_doc, tuple(documents), query_seed
        )
        session.restore(snap)
    except (SessionError, KeyError, ValueError, TypeError, IndexError, binascii.Error) as e:
        store.delete(stored.key)
        store.warn(f"the saved document session could not be restored ({e}): deleted; prefilling again")
        return None
    n_sel = int(meta.get("n_tokens_selected", -1))
    n_loaded = int(meta.get("n_tokens_loaded", 0))
    return LoadReport(
        int(meta.get("n_tokens_total", 0)), n_loaded, n_loaded < n_sel, time.perf_counter() - t0, True, n_sel
    )


# A long prefill saves what it finished (a partial session, under its own key) every CHECKPOINT_S seconds and when
# it is stopped; the next load of the same documents restores it and prefills the rest. Only prefills of at least
# CHECKPOINT_MIN_TOKENS tokens checkpoint (a short one is cheaper to redo than to save).
CHECKPOINT_S = 300.0
CHECKPOINT_MIN_TOKENS = 8192


def partial_key(key: str) -> str:
    from engine.session_store import make_key

    return make_key({"partial_of": key})


def save_partial(
    session: Session,
    store: SessionStore,
    key: str,
    documents: list[Document],
    plan: DocumentPlan,
    n_done: int,
) -> None:
    """The context after n_done of the plan's tokens, with the plan's spans (the rest declared on resume)."""
    from pathlib import Path

    snap = session.snapshot()
    if len(snap.input_ids) // 4 != n_done:
        raise SessionError(f"the context holds {len(snap.input_ids) // 4} tokens, not the {n_done} prefilled")
    meta = {
        "model": str(session.config.model_path),
        "model_name": Path(session.config.model_path).name + " (partial)",
        "n_ctx": session.n_ctx,
        "n_doc_tokens": n_done,
        "partial": n_done,
        "n_plan_tokens": len(plan.tokens),
        "documents": documents_meta(documents),
        "query_seed": base64.b64encode(snap.query_seed).decode("ascii"),
    }
    store.save(partial_key(key), meta, snap.input_ids, snap.state)


def resume_partial(session: Session, store: SessionStore, key: str, plan: DocumentPlan) -> int:
    """Restore the partial session of `key` into a context that begin_prefill has just emptied (the plan's
    sentence ends declared); returns the tokens it holds (0: none, or unusable: then deleted)."""
    import numpy as np

    pkey = partial_key(key)
    stored = store.load(pkey)
    if stored is None:
        return 0
    try:
        n_done = int(stored.meta["partial"])
        ids = np.frombuffer(stored.input_ids, dtype=np.int32)
        if not 0 < n_done < len(plan.tokens) or len(ids) != n_done or ids.tolist() != plan.tokens[:n_done]:
            raise ValueError("it holds other tokens than this prefill's")
        session.set_state(stored.state, stored.input_ids)
        session.declare_sentences([sp.tok_end for sp in plan.spans])
        if session.skv is not None:
            session.skv.close_cached()
            seed = base64.b64decode(stored.meta.get("query_seed", ""), validate=True)
            if seed:
                session.skv.set_query_seed(seed)
    except (SessionError, KeyError, ValueError, TypeError, binascii.Error) as e:
        store.delete(pkey)
        store.warn(
            f"the partly prefilled session could not be restored ({e}): deleted; prefilling from the start"
        )
        session.reset()
        session.declare_sentences([sp.tok_end for sp in plan.spans])
        return 0
    return n_done
