"""Conversations: each turn's question and answer stay in the context and in the sentence index, so a follow-up can
retrieve an earlier turn (labelled with its turn and role); a turn asked again from the same history is
bit-identical; a reopened chat is rebuilt from the saved documents and the turns' tokens, exactly; a turn that does
not fit is refused before anything is decoded."""

from __future__ import annotations

import time

import numpy as np
import pytest

from engine.bench.harness import load_book_text
from engine.documents import Document
from engine.params import Policy, SkvParams
from engine.session import ContextFullError, Session, SessionConfig
from engine.session_store import SessionStore

FACT = "Remember this for later: my neighbour's dog is called Brumblewick."


def _doc() -> Document:
    return Document.from_text("walden.txt", load_book_text("walden.txt")[20000:26000])


def _recording(log: list[np.ndarray]):
    def pick(logits: np.ndarray) -> int:
        log.append(np.array(logits, dtype=np.float32))
        return int(np.argmax(logits))

    return pick


@pytest.fixture(scope="module")
def chat(default_model_path):
    """The default model over ~1.5k tokens of Walden, sentence/1024 (sink 32, ring 64), room for a conversation."""
    s = Session(
        SessionConfig(
            str(default_model_path), n_ctx=4096, n_threads=2, skv=SkvParams(Policy.SENTENCE, 1024, 32, 64)
        )
    )
    s.load_documents([_doc()], reserve=2000)
    yield s
    s.close()


def test_a_follow_up_retrieves_an_earlier_turn_that_the_window_has_left(chat):
    # turn 1: the fact, then a long passage to summarise (~1200 tokens, prefilled densely for the suite's time), so
    # at turn 2 the fact lies ~1250 tokens back: outside window/1024's reach, inside the sentence index
    passage = load_book_text("alice_in_wonderland.txt")[30000:34800]
    r1 = chat.ask(
        f"{FACT} Now summarise the following passage in two sentences.\n\n{passage}",
        max_tokens=48,
        question_attention="dense",
    )
    assert r1.turn == 1 and [t.number for t in chat.turns] == [1]
    fact_at = next(sp for sp in chat.turns[0].spans if "Brumblewick" in sp.text)
    assert fact_at.role == "user" and fact_at.turn == 1
    assert chat.n_past - fact_at.tok_end > 1024 + 64  # the fact is not in window/1024's sink + recent tokens

    r2 = chat.ask("What is my neighbour's dog called?", max_tokens=16, keep_turns=1)
    assert r2.turn == 2 and "Brumblewick" in r2.answer, r2.answer
    top = chat.retrieved(r2.steps + [r2.first_step], top=10)
    hit = [e for e in top if e["doc"] == "conversation" and "Brumblewick" in e["text"]]
    assert hit and hit[0]["role"] == "user" and hit[0]["turn"] == 1 and hit[0]["location"] == "you, turn 1", (
        top
    )
    assert all(e.get("turn") != 2 for e in top)  # the question being answered is not its own source
    # the index's entries are the ones the session labels: same positions as the native table
    native = chat.skv.sentences()
    n_doc = len(chat.spans)
    assert [(sp.tok_start, sp.tok_end) for _, sp in chat.turn_entries()] == [
        native[sid] for sid, _ in chat.turn_entries()
    ]
    assert (
        chat.span_of(len(native) - 1) is not None and chat.span_of(len(native)) is None
    )  # every entry known

    # the same turn 2 under window/1024: the earlier turn is not attended wholesale, so the fact is missed
    params = chat.skv.get_params()
    chat.set_params(SkvParams(Policy.WINDOW, 1024, 32, 64))
    try:
        w2 = chat.ask("What is my neighbour's dog called?", max_tokens=16, keep_turns=1)
    finally:
        chat.set_params(params)
    assert "Brumblewick" not in w2.answer, w2.answer
    assert n_doc == len(chat.spans)


def test_a_follow_up_that_needs_the_previous_answer(chat):
    r1 = chat.ask("Make up a name for a dragon. Answer with the name only.", max_tokens=8)
    name = r1.answer.strip().strip(".!\"'").split()[0]
    assert name
    r2 = chat.ask("What name did you just give me?", max_tokens=24, keep_turns=1)
    assert name.lower() in r2.answer.lower(), (r1.answer, r2.answer)


def _three_turns(s: Session, keep_first: int = 0) -> list[list[np.ndarray]]:
    logs: list[list[np.ndarray]] = []
    for k, q in enumerate(["Who is the author of this text?", "Where does he live?", "What does he eat?"]):
        logs.append([])
        s.ask(q, max_tokens=8, sampler=_recording(logs[-1]), keep_turns=keep_first + k if k else keep_first)
    return logs


def test_regenerating_turn_2_of_3_gives_bit_identical_logits(chat):
    logs = _three_turns(chat)
    assert [t.number for t in chat.turns] == [1, 2, 3]
    again: list[np.ndarray] = []
    r = chat.ask("Where does he live?", max_tokens=8, sampler=_recording(again), keep_turns=1)
    assert r.turn == 2 and [t.number for t in chat.turns] == [1, 2]
    assert len(again) == len(logs[1])
    for a, b in zip(again, logs[1], strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_reopened_chat_is_rebuilt_exactly_from_the_saved_documents_and_the_turns(
    default_model_path, tmp_path
):
    store = SessionStore(tmp_path / "sessions", max_bytes=1 << 30)
    cfg = SessionConfig(
        str(default_model_path), n_ctx=4096, n_threads=2, skv=SkvParams(Policy.SENTENCE, 1024, 32, 64)
    )
    live = Session(cfg)
    try:
        t0 = time.perf_counter()
        live.load_documents([_doc()], reserve=2000, store=store)
        prefill_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        _three_turns(live)
        turns_s = time.perf_counter() - t0
        records = [t.record() for t in live.turns]
        want: list[np.ndarray] = []
        live.ask("What does he drink?", max_tokens=6, sampler=_recording(want), keep_turns=3)
    finally:
        live.close()
    reopened = Session(cfg)
    try:
        t0 = time.perf_counter()
        assert reopened.load_documents([_doc()], reserve=2000, store=store).restored
        for rec in records:
            reopened.replay(rec)
        restore_s = time.perf_counter() - t0
        got: list[np.ndarray] = []
        reopened.ask("What does he drink?", max_tokens=6, sampler=_recording(got), keep_turns=3)
    finally:
        reopened.close()
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    print(
        f"\nrestore {restore_s:.2f} s vs prefill {prefill_s:.2f} s + turns {turns_s:.2f} s "
        f"({restore_s / (prefill_s + turns_s):.0%})"
    )


def test_a_turn_that_does_not_fit_is_refused_before_anything_is_decoded(tiny_model_path):
    s = Session(SessionConfig(str(tiny_model_path), n_ctx=512, n_threads=2, skv=SkvParams(budget=128)))
    try:
        s.load_documents([Document.from_text("a.txt", "The mill stands by the river. " * 30)], reserve=200)
        with pytest.raises(ContextFullError, match="drop the oldest turns, start a new chat, or raise n_ctx"):
            for _ in range(20):
                s.ask("And then?", max_tokens=40, ignore_eos=True, keep_turns=len(s.turns))
        n_past, turns = s.n_past, s.turns
        assert len(turns) >= 1
        with pytest.raises(ContextFullError):
            s.ask("And then?", max_tokens=40, ignore_eos=True, keep_turns=len(s.turns))
        assert (s.n_past, s.turns) == (n_past, turns)  # nothing was decoded or dropped
        assert s.ask("And then?", max_tokens=40, ignore_eos=True).turn == 1  # a new start fits
    finally:
        s.close()


def test_sliding_window_models_rebuild_a_cut_conversation_by_replaying_it(gemma_model_path):
    # gemma-3: a tail removal is not exact on its sliding-window layers, so a cut turn is rebuilt from the
    # documents' state and the kept turns decoded again; asking turn 2 again is still bit-identical
    s = Session(SessionConfig(str(gemma_model_path), n_ctx=2048, n_threads=2, skv=SkvParams(budget=256)))
    try:
        s.load_documents(
            [Document.from_text("walden.txt", load_book_text("walden.txt")[20000:22500])], reserve=600
        )
        logs = _three_turns(s)
        again: list[np.ndarray] = []
        s.ask("Where does he live?", max_tokens=8, sampler=_recording(again), keep_turns=1)
        for a, b in zip(again, logs[1], strict=True):
            np.testing.assert_array_equal(a, b)
    finally:
        s.close()


def test_a_follow_up_closes_the_model_turn_and_opens_a_user_turn_with_control_tokens(chat):
    assert chat.prompts.follow_up_before == "<|im_end|>\n<|im_start|>user\n"
    parts = chat.prompts.parts("And then?", "", follow_up=True)
    assert [special for _, special in parts] == [True, False, True]
    before = chat.tokenize(parts[0][0], special=True)
    assert before[0] == 151645 and 151644 in before  # <|im_end|>, <|im_start|>: one token each
    assert 151644 not in chat.tokenize(parts[1][0])
