"""The context's layout: what goes in before the question (BOS, the prompt format's head, per document a header,
its sentences and a tail), cut at a sentence boundary when it does not fit, and what each native index entry is."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from engine import params as defaults
from engine.documents import Document
from engine.sentences import Sentence, tokenize_sentences
from engine.session.config import SessionError

if TYPE_CHECKING:
    from engine.session.core import Session

# the layout of the documents in the context (BOS, "Document: name" headers, separators): part of a saved session's
# key, so bump it whenever plan() changes what it feeds
DOC_FORMAT = 3  # 2: short sentences join the next; 3: control tokens as such, BOS only where the vocab adds one, "query_seed"


@dataclass(frozen=True, slots=True)
class SpanInfo:
    """What one native index entry (sentence) is: a document sentence, a header, or a sentence of a turn (its
    question, its answer, or the prompt format's text between them)."""

    doc: int  # index into Session.documents, -1 for prompt/answer text
    char_start: int
    char_end: int
    tok_start: int  # absolute positions in the context
    tok_end: int
    text: str
    turn: int = 0  # a conversation turn's entry: its turn, 1-based (0: documents)
    role: str = ""  # "user" (the question), "assistant" (the answer) or "" (the prompt format's own text)


@dataclass(frozen=True, slots=True)
class DocRange:
    """The part of one document to load: sentences (0-based indices) or characters, [start, end); end None = to
    the end. A character range takes the sentences that start inside it."""

    start: int = 0
    end: int | None = None
    unit: Literal["sentence", "char"] = "sentence"

    def __post_init__(self) -> None:
        if self.unit not in ("sentence", "char"):
            raise ValueError(f"a range unit is 'sentence' or 'char', got {self.unit!r}")
        if self.start < 0:
            raise ValueError(f"a range starts at 0 or later, got {self.start}")
        if self.end is not None and self.end <= self.start:
            raise ValueError(f"a range ends after its start, got {self.start}:{self.end}")

    @classmethod
    def parse(cls, text: str) -> DocRange:
        """'START:END' (sentences) or 'chars:START:END' (characters); either bound may be empty."""
        raw = text.strip()
        unit: Literal["sentence", "char"] = "sentence"
        for prefix in ("chars:", "char:"):
            if raw.startswith(prefix):
                unit, raw = "char", raw[len(prefix) :]
        a, sep, b = raw.partition(":")
        try:
            if not sep:
                raise ValueError
            return cls(int(a) if a.strip() else 0, int(b) if b.strip() else None, unit)
        except ValueError:
            raise ValueError(f"a range is START:END (sentences) or chars:START:END, got {text!r}") from None

    def pick(self, sents: list[Sentence]) -> list[Sentence]:
        if self.unit == "sentence":
            return sents[self.start : self.end]
        end = self.end if self.end is not None else float("inf")
        return [s for s in sents if self.start <= s.char_start < end]

    def key(self) -> list:
        return [self.unit, self.start, self.end]


@dataclass(frozen=True, slots=True)
class DocumentPlan:
    """What goes into the context: tokens and spans (cut at a sentence boundary when they do not fit)."""

    tokens: list[int]
    spans: list[SpanInfo]
    n_total: int  # tokens of the whole documents
    n_selected: int  # tokens of the chosen ranges (n_total without ranges)

    @property
    def n_loaded(self) -> int:
        return sum(s.tok_end - s.tok_start for s in self.spans if s.doc >= 0)


@dataclass(frozen=True, slots=True)
class LoadReport:
    n_tokens_total: int  # document tokens (all documents, whole)
    n_tokens_loaded: int  # document tokens in the context
    truncated: bool  # the chosen part did not fit: loaded from its start as much as fits
    prefill_s: float  # prefill, or restore of a saved session
    restored: bool = False
    n_tokens_selected: int = -1  # tokens of the chosen ranges; -1: the whole documents
    save_s: float = 0.0  # writing the session to the store after a prefill


@dataclass(frozen=True, slots=True)
class LoadedContext:
    """What the context holds before the question: the documents, what every native index entry is, and how many
    tokens they took. Session owns it and replaces it whole (prefill, restore, rewind, reset)."""

    documents: tuple[Document, ...] = ()
    spans: tuple[SpanInfo, ...] = ()  # native sentence id -> what it is
    n_doc_tokens: int = 0


def plan_documents(
    session: Session, documents: list[Document], reserve: int, ranges: Mapping[int, DocRange] | None = None
) -> DocumentPlan:
    """Tokenize documents sentence by sentence. `ranges` (document index -> DocRange) picks the part of a
    document to load (default: all of it); what does not fit in n_ctx - reserve tokens is cut at a sentence
    boundary, from the start of the chosen part, and counted in n_selected - n_loaded."""
    ranges = dict(ranges or {})
    for di in ranges:
        if not 0 <= di < len(documents):
            raise ValueError(f"a range names document {di}, but there are {len(documents)} documents")
    budget = session.n_ctx - reserve
    if budget < 16:
        raise SessionError(f"the context ({session.n_ctx} tokens) leaves no room for documents: raise n_ctx")
    tokens: list[int] = session.bos_tokens()
    spans: list[SpanInfo] = []
    if tokens:
        spans.append(SpanInfo(-1, 0, 0, 0, 1, ""))
    if session.prompts.head:  # e.g. a chat template's opening of the user turn (its control tokens as such)
        head = session.tokenize(session.prompts.head, special=True)
        spans.append(SpanInfo(-1, 0, 0, len(tokens), len(tokens) + len(head), session.prompts.head))
        tokens.extend(head)
    n_total = n_selected = 0
    full = True
    max_len = session.config.skv.max_sentence_len if session.config.skv else defaults.MAX_SENTENCE_LEN
    tail = session.tokenize(session.prompts.doc_tail)
    for di, doc in enumerate(documents):
        header = session.prompts.header(doc.name)
        h_toks = session.tokenize(header)
        d_toks, sents = tokenize_sentences(doc.text, session.tokenize, max_tokens=max_len)
        n_total += len(d_toks)
        if di in ranges:
            picked = ranges[di].pick(sents)
            if not picked:
                r = ranges[di]
                raise ValueError(
                    f"the range {r.start}:{'' if r.end is None else r.end} ({r.unit}s) selects nothing of "
                    f"{doc.name} ({len(sents)} sentences, {len(doc.text)} characters)"
                )
            sents = picked
        n_selected += sum(s.n_tokens for s in sents)
        if not full:
            continue
        if len(tokens) + len(h_toks) >= budget:
            full = False
            continue
        spans.append(SpanInfo(-1, 0, 0, len(tokens), len(tokens) + len(h_toks), header))
        tokens.extend(h_toks)
        base = len(tokens)
        t0 = sents[0].tok_start if sents else 0
        taken = 0
        for s in sents:
            if base + s.tok_end - t0 > budget:
                full = False
                break
            spans.append(
                SpanInfo(
                    di,
                    s.char_start,
                    s.char_end,
                    base + s.tok_start - t0,
                    base + s.tok_end - t0,
                    doc.text[s.char_start : s.char_end],
                )
            )
            taken = s.tok_end - t0
        tokens.extend(d_toks[t0 : t0 + taken])
        if full and len(tokens) + len(tail) < budget:
            spans.append(SpanInfo(-1, 0, 0, len(tokens), len(tokens) + len(tail), session.prompts.doc_tail))
            tokens.extend(tail)
    return DocumentPlan(tokens, spans, n_total, n_selected)
