"""One conversation over documents (the Session) and what it is made of, one concept a module:

config       SessionConfig, errors, the checks before a model loads, the paper's protocol options
layout       what goes into the context before the question (plan_documents), spans, LoadedContext
core         Session: prefill, decoding (ask), rewind, snapshots
conversation the turns after the documents (question and answer kept in the context and the index)
persistence  SessionSnapshot and saved document sessions (store key, save, restore)
retrieval    which sentences each decode step attended, and an answer's top sentences
"""

from engine.session.config import (
    QUESTION_ATTENTION,
    SENTENCE_START,
    Cancelled,
    ContextFullError,
    SessionConfig,
    SessionError,
    SessionInputError,
    check_model,
    check_protocol,
)
from engine.session.conversation import Turn, TurnRecord, entry_label
from engine.session.core import AskResult, Prefill, Session, ShouldStop
from engine.session.layout import DOC_FORMAT, DocRange, DocumentPlan, LoadedContext, LoadReport, SpanInfo
from engine.session.persistence import SessionSnapshot
from engine.session.retrieval import StepRetrieval

__all__ = [
    "DOC_FORMAT",
    "QUESTION_ATTENTION",
    "SENTENCE_START",
    "AskResult",
    "Cancelled",
    "ContextFullError",
    "DocRange",
    "DocumentPlan",
    "Turn",
    "TurnRecord",
    "entry_label",
    "LoadReport",
    "LoadedContext",
    "Prefill",
    "Session",
    "SessionConfig",
    "SessionError",
    "SessionInputError",
    "SessionSnapshot",
    "ShouldStop",
    "SpanInfo",
    "StepRetrieval",
    "check_model",
    "check_protocol",
]
