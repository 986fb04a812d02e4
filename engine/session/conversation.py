"""A conversation over the documents: its turns (question and answer, both kept in the context and in the sentence
index) and what a turn's index entries are.

A turn decodes four segments: the prompt format's text before the question (turn 2 on: the end of the model's turn
and a new user turn), the question (role "user"), the format's text after it, then the answer prefix and the answer
(role "assistant"). Every segment ends its open sentence, so every index entry lies in one segment and has one role.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine import params as defaults
from engine.params import SkvParams
from engine.session.layout import SpanInfo

ROLES = ("user", "assistant")


@dataclass(frozen=True, slots=True)
class TurnRecord:
    """What a turn needs to be decoded again (Session.replay): kept by the app with the chat's messages. Without
    answer_tokens the answer text is tokenized (an older history: close to, not always equal to, what was decoded)."""

    question: str
    answer_tokens: tuple[int, ...] = ()
    answer: str = ""
    answer_prefix: str = ""
    reason: str = "max_tokens"
    question_attention: str = defaults.QUESTION_ATTENTION
    sentence_start: str = defaults.SENTENCE_START


@dataclass(frozen=True, slots=True)
class Turn:
    """One question and its answer as they are in the context (what replay() decodes again to rebuild it)."""

    number: int  # 1-based
    question: str
    answer_prefix: str
    answer: str
    answer_tokens: tuple[
        int, ...
    ]  # every generated token decoded into the context (an end-of-turn token is not)
    reason: str  # "eos", "stop", "max_tokens" or "stopped"
    tok_start: int  # its first token's position
    tok_end: int  # one past its last token
    spans: tuple[SpanInfo, ...]  # its index entries, in order
    params: SkvParams | None  # the SentenceKV parameters it was decoded under (None: plain llama.cpp)
    question_attention: str
    sentence_start: str
    prompt_tokens: tuple[int, ...] = ()  # a benchmark's own prompt (else the format's, built for its place)

    @property
    def stopped(self) -> bool:
        return self.reason == "stopped"

    def record(self) -> TurnRecord:
        return TurnRecord(
            self.question,
            self.answer_tokens,
            self.answer,
            self.answer_prefix,
            self.reason,
            self.question_attention,
            self.sentence_start,
        )


def entry_label(span: SpanInfo) -> str:
    """How the UI and the CLI name a turn's entry: "you, turn 3" / "answer, turn 2"."""
    return f"{'you' if span.role == 'user' else 'answer'}, turn {span.turn}"


def turn_entry(span: SpanInfo, sid: int, weight: float) -> dict:
    """A conversation entry in `retrieved` (beside the documents' {doc, location, text, weight, sentence})."""
    return {
        "doc": "conversation",
        "turn": span.turn,
        "role": span.role,
        "location": entry_label(span),
        "text": span.text.strip(),
        "weight": weight,
        "sentence": sid,
    }
