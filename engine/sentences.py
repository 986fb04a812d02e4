"""Sentences: pysbd segmentation → character spans → exact token spans.

Every sentence is tokenized on its own and the document's tokens are the concatenation of the sentences' tokens,
so a sentence boundary is a token boundary by construction (no char→token guesswork). Sentences longer than
`max_tokens` (tables, code, text without punctuation) are split into pseudo-sentences of at most that many tokens.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import pysbd

from engine.params import MAX_SENTENCE_LEN

# pysbd is slow on very long runs without punctuation: paragraphs longer than this are cut first
_MAX_PARAGRAPH_CHARS = 20_000
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n")

Tokenize = Callable[[str], list[int]]


@dataclass(frozen=True, slots=True)
class Sentence:
    """One sentence (or pseudo-sentence) of a text: characters [char_start, char_end), tokens [tok_start, tok_end)
    relative to the text's own token list."""

    char_start: int
    char_end: int
    tok_start: int
    tok_end: int

    @property
    def n_tokens(self) -> int:
        return self.tok_end - self.tok_start


def _paragraph_spans(text: str) -> list[tuple[int, int]]:
    """Split text at blank lines; each span keeps its trailing separator so the spans tile the text."""
    spans = []
    start = 0
    for m in _PARAGRAPH_BREAK.finditer(text):
        spans.append((start, m.end()))
        start = m.end()
    if start < len(text):
        spans.append((start, len(text)))
    out = []
    for a, b in spans:
        while b - a > _MAX_PARAGRAPH_CHARS:
            cut = text.rfind(" ", a + _MAX_PARAGRAPH_CHARS // 2, a + _MAX_PARAGRAPH_CHARS)
            cut = cut + 1 if cut > a else a + _MAX_PARAGRAPH_CHARS
            out.append((a, cut))
            a = cut
        if b > a:
            out.append((a, b))
    return out


def split_sentences(text: str, language: str = "en") -> list[tuple[int, int]]:
    """Character spans of the sentences of text; the spans tile the text exactly (whitespace stays attached)."""
    if not text:
        return []
    try:
        seg = pysbd.Segmenter(language=language, clean=False)
    except (ValueError, KeyError):
        raise ValueError(f"unsupported language {language!r} for sentence splitting") from None
    spans: list[tuple[int, int]] = []
    for a, b in _paragraph_spans(text):
        para = text[a:b]
        # hard-wrapped prose: single newlines are not sentence ends (1:1 replacement keeps offsets)
        flat = para.replace("\r", " ").replace("\n", " ")
        pos = a
        for piece in seg.segment(flat):
            if not piece:
                continue
            spans.append((pos, pos + len(piece)))
            pos += len(piece)
        if pos != b:  # pysbd dropped characters: keep the tiling exact
            if spans and spans[-1][0] >= a:
                spans[-1] = (spans[-1][0], b)
            else:
                spans.append((a, b))
    return spans


def tokenize_sentences(
    text: str,
    tokenize: Tokenize,
    max_tokens: int = MAX_SENTENCE_LEN,
    language: str = "en",
    min_tokens: int = 6,
) -> tuple[list[int], list[Sentence]]:
    """Tokenize text sentence by sentence. Returns (tokens, sentences) with exact token spans.

    A sentence shorter than `min_tokens` joins the next one (while the pair stays within max_tokens): very short
    sentences ("Yes.", repeated filler) would otherwise fill the native table (n_ctx/6 entries) long before the
    context is full, and a full table merges everything after it into its last entry."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    tokens, raw = _tokenize_sentences(text, tokenize, max_tokens, language)
    merged: list[Sentence] = []
    for s in raw:
        if merged and merged[-1].n_tokens < min_tokens and merged[-1].n_tokens + s.n_tokens <= max_tokens:
            m = merged[-1]
            merged[-1] = Sentence(m.char_start, s.char_end, m.tok_start, s.tok_end)
        else:
            merged.append(s)
    return tokens, merged


def _tokenize_sentences(
    text: str, tokenize: Tokenize, max_tokens: int, language: str
) -> tuple[list[int], list[Sentence]]:
    tokens: list[int] = []
    sentences: list[Sentence] = []
    for a, b in split_sentences(text, language):
        toks = tokenize(text[a:b])
        if not toks:
            continue
        t0 = len(tokens)
        tokens.extend(toks)
        n = len(toks)
        if n <= max_tokens:
            sentences.append(Sentence(a, b, t0, t0 + n))
            continue
        # pseudo-sentences: characters are apportioned by token count (locations only; tokens stay exact)
        for k in range(0, n, max_tokens):
            k1 = min(n, k + max_tokens)
            ca = a + (b - a) * k // n
            cb = b if k1 == n else a + (b - a) * k1 // n
            sentences.append(Sentence(ca, cb, t0 + k, t0 + k1))
    return tokens, sentences


# what pysbd can end an English sentence at: terminal punctuation (full-width forms too) and ")" (its list items,
# "1) ... 2) ...")
_TERMINAL = re.compile(r"[.!?…。！？)]")


class SentenceStream:
    """Detects sentence ends in streamed (generated) text.

    Feed each token's text with `push`; it returns the number of tokens (counted from the start of the stream) at
    which sentences closed since the last call, so the caller can declare the boundaries to the native cache.
    A sentence counts as closed once pysbd sees another one start after it, or at a blank line.
    """

    def __init__(self, language: str = "en", max_tokens: int = MAX_SENTENCE_LEN) -> None:
        self._seg = pysbd.Segmenter(language=language, clean=False)
        self._max_tokens = max_tokens
        self._text = ""  # text since the last boundary
        self._tok_ends: list[int] = []  # char end (in _text) of each token since the last boundary
        self._n_done = 0  # tokens before the last boundary

    def push(self, piece: str) -> list[int]:
        self._text += piece
        self._tok_ends.append(len(self._text))
        ends: list[int] = []
        while True:
            cut = self._find_close()
            if cut is None:
                break
            # the first token whose text reaches the sentence end closes it
            n_tok = next((i + 1 for i, e in enumerate(self._tok_ends) if e >= cut), len(self._tok_ends))
            if n_tok >= len(self._tok_ends):
                # the end lies inside the newest token: wait for the next one
                break
            self._commit(n_tok, ends)
        if len(self._tok_ends) >= self._max_tokens:
            self._commit(self._max_tokens, ends)
        return ends

    def flush(self) -> list[int]:
        """Close whatever is pending (a turn's question, its template text, or its answer ends here): the end
        after the last pushed token, or nothing when no token is pending."""
        ends: list[int] = []
        if self._tok_ends:
            self._commit(len(self._tok_ends), ends)
        return ends

    def _find_close(self) -> int | None:
        text = self._text
        if not text.strip():
            return None
        blank = text.find("\n\n")
        if 0 <= blank < len(text) - 2 and text[:blank].strip():
            return blank + 2
        if not _TERMINAL.search(text):
            return None  # pysbd ends a sentence only at terminal punctuation: nothing to ask it (it is slow)
        flat = text.replace("\n", " ")
        pieces = [p for p in self._seg.segment(flat) if p]
        if len(pieces) >= 2 and pieces[1].strip():
            # the sentence ends at its last visible character (the space after it starts the next token); pysbd
            # may drop leading whitespace, so find the piece in the text
            first = pieces[0].strip()
            return flat.find(first) + len(first)
        return None

    def _commit(self, n_tok: int, ends: list[int]) -> None:
        cut = self._tok_ends[n_tok - 1]
        self._text = self._text[cut:]
        self._tok_ends = [e - cut for e in self._tok_ends[n_tok:]]
        self._n_done += n_tok
        ends.append(self._n_done)
