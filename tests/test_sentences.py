"""Sentences: pysbd spans tile the text, token spans are exact, over-long sentences are split, and sentence ends
are found in streamed text."""

from __future__ import annotations

from engine.sentences import SentenceStream, split_sentences, tokenize_sentences

TEXT = (
    "Alice was beginning to get very tired of sitting by her sister on the\n"
    "bank, and of having nothing to do. Once or twice she had peeped into the\n"
    "book her sister was reading. 'And what is the use of a book,' thought Alice.\n\n"
    "Mr. Rabbit ran by. It was 3.5 p.m. on the dot!\n"
)


def chars(s: str) -> list[int]:
    return [ord(c) for c in s]


def test_spans_tile_the_text_and_hard_wrapped_lines_stay_one_sentence():
    spans = split_sentences(TEXT)
    assert spans[0][0] == 0 and spans[-1][1] == len(TEXT)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    first = TEXT[spans[0][0] : spans[0][1]]
    assert first.startswith("Alice was") and first.rstrip().endswith("nothing to do.")
    texts = [TEXT[a:b].strip() for a, b in spans]
    assert "Mr. Rabbit ran by." in texts  # abbreviations do not end sentences
    assert "It was 3.5 p.m. on the dot!" in texts


def test_token_spans_are_exact():
    tokens, sents = tokenize_sentences(TEXT, chars, max_tokens=1000)
    assert tokens == chars(TEXT)
    assert sents[0].tok_start == 0 and sents[-1].tok_end == len(tokens)
    for s in sents:
        assert tokens[s.tok_start : s.tok_end] == chars(TEXT[s.char_start : s.char_end])
    assert all(a.tok_end == b.tok_start for a, b in zip(sents, sents[1:], strict=False))


def test_over_long_sentences_become_bounded_pseudo_sentences():
    text = "word " * 500  # no punctuation at all
    tokens, sents = tokenize_sentences(text, chars, max_tokens=64)
    assert len(tokens) == len(text)
    assert max(s.n_tokens for s in sents) <= 64
    assert sum(s.n_tokens for s in sents) == len(tokens)
    assert all(a.tok_end == b.tok_start for a, b in zip(sents, sents[1:], strict=False))


def test_a_megabyte_line_without_punctuation_splits_quickly():
    text = "x" * 1_000_000
    spans = split_sentences(text)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)


def test_stream_reports_sentence_ends_at_token_counts():
    pieces = ["The", " key", " is", " 42", ".", " Remember", " it", ".", " Done", "!"]
    stream = SentenceStream()
    ends = []
    for p in pieces:
        ends += stream.push(p)
    # "The key is 42." closes once the next sentence starts; "Remember it." likewise
    assert ends[:2] == [5, 8]


def test_stream_closes_at_blank_lines_and_at_max_tokens():
    stream = SentenceStream(max_tokens=4)
    ends = []
    for p in ["a", "b", "c", "d", "e"]:
        ends += stream.push(p)
    assert ends == [4]
    stream = SentenceStream()
    ends = []
    for p in ["Title", "\n\n", "Body", " text"]:
        ends += stream.push(p)
    assert ends == [2]


def test_flush_closes_the_pending_tokens_once():
    stream = SentenceStream()
    ends = []
    for p in ["The", " key", " is", " 42", ".", " Remember", " it"]:
        ends += stream.push(p)
    assert ends == [5]
    assert stream.flush() == [7]  # " Remember it" ends with the turn, unfinished as it is
    assert stream.flush() == []  # nothing pending
    assert stream.push("<ctl>") == [] and stream.flush() == [8]  # a piece without visible text still closes


def test_very_short_sentences_join_the_next_one():
    text = "Yes. No. Maybe so. The grass is green and the sky is blue. Fine."
    tokens, sents = tokenize_sentences(text, lambda s: s.split(), max_tokens=128, min_tokens=3)
    assert sum(s.n_tokens for s in sents) == len(tokens)
    assert all(a.tok_end == b.tok_start for a, b in zip(sents, sents[1:], strict=False))
    # "Yes." + "No." + "Maybe so." reach 3 words, then the long sentence stands alone; "Fine." stays last
    assert [text[s.char_start : s.char_end].strip() for s in sents] == [
        "Yes. No. Maybe so.",
        "The grass is green and the sky is blue.",
        "Fine.",
    ]


def test_the_stream_asks_pysbd_only_when_a_sentence_can_end_and_finds_the_same_ends():
    # a reference that segments at every token (as before the terminal-punctuation check): same ends on books and
    # on list-like text without punctuation
    import re

    from engine.bench.harness import load_book_text

    class EveryToken(SentenceStream):
        def _find_close(self):
            text = self._text
            if not text.strip():
                return None
            blank = text.find("\n\n")
            if 0 <= blank < len(text) - 2 and text[:blank].strip():
                return blank + 2
            flat = text.replace("\n", " ")
            pieces = [p for p in self._seg.segment(flat) if p]
            if len(pieces) >= 2 and pieces[1].strip():
                first = pieces[0].strip()
                return flat.find(first) + len(first)
            return None

    texts = [
        load_book_text("alice_in_wonderland.txt")[30000:38000],
        load_book_text("walden.txt")[60000:66000],
        "Steps:\n1) open the box 2) take the key 3) lock it\na) first b) second\n- item one\n- item two\n"
        * 4,
        'He said "stop" and left (quietly); it was 3 p.m. on Jan. 5 at St. Paul\'s with Dr. Who! Then? Yes…',
    ]
    for text in texts:
        pieces = re.findall(r"\s*\S+", text)
        got, want = [], []
        fast, ref = SentenceStream(), EveryToken()
        for p in pieces:
            got += fast.push(p)
            want += ref.push(p)
        assert got == want and len(got) >= 2, text[:40]
