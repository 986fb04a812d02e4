"""`skv eval qa`: the question file holds exact, unique, spread sources; windows hold every source; scoring takes
list-of-lists alternatives at word starts; the harness runs end to end on the tiny model (its weights are random:
the answers are garbage, so only the structure and that scores are computed are asserted)."""

from __future__ import annotations

import argparse
import json
from collections import Counter

import pytest

from engine.bench import qa
from engine.bench.harness import load_book_text
from engine.bench.report import books_dir
from engine.params import Gqa, Oracle, SkvParams

BOOKS = (
    "alice_in_wonderland.txt",
    "christmas_carol.txt",
    "frankenstein.txt",
    "heart_of_darkness.txt",
    "walden.txt",
)


def _need_books() -> None:
    missing = [b for b in BOOKS if not (books_dir() / b).exists()]
    if missing:
        pytest.fail(
            f"books missing from {books_dir()}: {', '.join(missing)} (resources/books, or SKV_BOOKS_DIR)"
        )


def _quarter_tokens(s: str) -> int:  # ~4 characters per token, no model needed
    return len(s) // 4


# ----------------------------------------------------------------- the question file


def test_question_file_shape():
    qs = qa.load_questions()
    assert len(qs) >= 48
    assert len({q.id for q in qs}) == len(qs)
    per = Counter(q.book for q in qs)
    assert set(per) == set(BOOKS) and min(per.values()) >= 8, per
    for q in qs:
        assert (
            q.question.strip()
            and q.expected
            and all(slot and all(a.strip() for a in slot) for slot in q.expected)
        )
        # the source itself answers the question
        assert qa.score_answer(q.expected, " ".join(q.source.split())), q.id
        assert not any(qa.slot_hits(q.expected, q.question)), f"{q.id}: the question gives its answer away"
    raw = json.loads(qa.DEFAULT_QUESTIONS.read_text(encoding="utf-8"))
    assert raw["version"] == 1 and raw["description"]
    assert all(isinstance(s, list) for q in raw["questions"] for s in q["expected"]), (
        "expected is list of lists"
    )


def test_question_sources_are_exact_unique_and_spread():
    _need_books()
    qs = qa.load_questions()
    texts = {b: load_book_text(b) for b in BOOKS}
    assert qa.check_sources(qs, texts) == []
    for q in qs:
        t = texts[q.book]
        assert t.count(q.source) == 1, q.id
        assert t.index(q.source) == q.char_offset, q.id
        assert q.char_end <= qa.body_end(t), f"{q.id} is in the licence"
    for b, t in texts.items():
        offs = [q.char_offset for q in qs if q.book == b]
        for length in (qa.body_end(t), len(t)):  # thirds of the book, with and without the licence
            thirds = Counter(min(2, 3 * o // length) for o in offs)
            assert all(thirds[i] >= 1 for i in range(3)), (b, thirds)


def test_parse_questions_rejects_bad_files():
    good = {
        "id": "x-01",
        "book": "b.txt",
        "question": "Q?",
        "answer_prefix": "",
        "expected": [["7", "seven"]],
        "source": "There were seven.",
        "char_offset": 3,
    }
    assert qa.parse_questions({"version": 1, "questions": [good]})[0].expected == (("7", "seven"),)
    for bad in (
        {**good, "expected": ["seven"]},
        {**good, "expected": [[]]},
        {**good, "expected": []},
        {**good, "char_offset": -1},
        {**good, "source": ""},
    ):
        with pytest.raises(ValueError):
            qa.parse_questions({"version": 1, "questions": [bad]})
    with pytest.raises(ValueError, match="duplicate"):
        qa.parse_questions({"version": 1, "questions": [good, good]})
    with pytest.raises(ValueError, match="version"):
        qa.parse_questions({"version": 2, "questions": [good]})


# ----------------------------------------------------------------- scoring


def test_scoring_with_alternatives():
    exp = [["seven", "7"]]
    assert qa.score_answer(exp, "There were Seven of them.")
    assert qa.score_answer(exp, "7 kettles")
    assert not qa.score_answer(exp, "seventeen kettles")  # a number word is whole
    assert not qa.score_answer(exp, "77 kettles")
    assert not qa.score_answer(exp, "I do not know.")
    assert not qa.score_answer(exp, "")
    two = [["five", "5"], ["six", "6"]]
    assert qa.score_answer(two, "He was five feet six.") and qa.score_answer(two, "5 ft 6 in")
    assert not qa.score_answer(two, "He was five feet tall."), "every slot must be satisfied"
    assert qa.slot_hits(two, "five feet") == [True, False]
    assert not qa.score_answer([["ten", "10"]], "It was often written down.")  # not inside a word
    assert qa.score_answer([["22"]], "on the 22d of December")
    assert qa.score_answer([["guinea-pig"]], "Two GUINEA-PIGS held him up.")  # plural of a word is fine
    assert qa.score_answer([["looking-glass", "mirror"]], "near the mirror")


def test_select_questions_spreads_a_limit_over_books():
    qs = qa.load_questions()
    picked = qa.select_questions(qs, limit=10)
    assert len(picked) == 10 and Counter(q.book for q in picked) == dict.fromkeys(BOOKS, 2)
    only = qa.select_questions(qs, books=("walden",))
    assert only and {q.book for q in only} == {"walden.txt"}
    with pytest.raises(ValueError):
        qa.select_questions(qs, books=("nope",))


def test_extra_options_are_forwarded_typed():
    from engine.session import SessionConfig

    assert qa.parse_options(
        ["max_sentence_len=64", "min-query-tokens=2"], SkvParams, qa._OWN_SKV_FIELDS, "SKV"
    ) == {"max_sentence_len": 64, "min_query_tokens": 2}
    assert qa.parse_options(["n_gpu_layers=99"], SessionConfig, qa._OWN_SESSION_FIELDS, "session") == {
        "n_gpu_layers": 99
    }
    for bad in (["nope=1"], ["budget=5"], ["max_sentence_len"], ["max_sentence_len=x"]):
        with pytest.raises(ValueError):
            qa.parse_options(bad, SkvParams, qa._OWN_SKV_FIELDS, "SKV")


# ----------------------------------------------------------------- windows


@pytest.mark.parametrize("budget", [700, 2000, 8000, 28000])
def test_windows_hold_every_source_of_the_books(budget):
    _need_books()
    qs = qa.load_questions()
    for b in BOOKS:
        text = load_book_text(b)
        mine = [q for q in qs if q.book == b]
        wins = qa.build_windows(text, mine, budget, _quarter_tokens)
        assert sorted(q.id for w in wins for q in w.questions) == sorted(q.id for q in mine)
        for w in wins:
            assert w.n_tokens <= budget and w.end <= qa.body_end(text)
            piece = text[w.start : w.end]
            for q in w.questions:
                assert piece.find(q.source) == q.char_offset - w.start, (b, q.id)
                # off the window's edges, unless the book itself ends there
                margin = (w.end - w.start) // 20
                assert w.start == 0 or q.char_offset - w.start >= margin, (b, q.id)
                assert w.end == qa.body_end(text) or w.end - q.char_end >= margin, (b, q.id)
        if budget >= 8000:
            assert len(wins) < len(mine), "questions close together share a window"


def _synthetic(n: int = 300) -> tuple[str, list[qa.Question]]:
    sents = [f"The river ran past mill number {i}. Nobody knew why it was there." for i in range(n)]
    facts = {
        60: ("The miller kept exactly seventeen copper kettles in the loft.", "seventeen", "17"),
        200: ("A heron named Bartholomew slept on the third chimney.", "Bartholomew", "bartholomew"),
    }
    for at, (s, *_) in facts.items():
        sents[at] = s
    text = "\n\n".join(" ".join(sents[i : i + 10]) for i in range(0, n, 10))
    qs = [
        qa.Question(
            "syn-01",
            "book.txt",
            "How many copper kettles did the miller keep in the loft?",
            "",
            (("seventeen", "17"),),
            facts[60][0],
            text.index(facts[60][0]),
        ),
        qa.Question(
            "syn-02",
            "book.txt",
            "What was the name of the heron on the third chimney?",
            "",
            (("bartholomew",),),
            facts[200][0],
            text.index(facts[200][0]),
        ),
    ]
    return text, qs


def test_windows_on_a_synthetic_book_pack_and_centre():
    text, qs = _synthetic()
    wins = qa.build_windows(text, qs, 100_000, _quarter_tokens)
    assert len(wins) == 1 and wins[0].start == 0 and wins[0].end == len(text)  # the whole book fits
    small = qa.build_windows(text, qs, 300, _quarter_tokens)
    assert len(small) == 2
    for w, q in zip(small, qs, strict=True):
        assert w.questions == (q,) and w.n_tokens <= 300
        depth = ((q.char_offset + q.char_end) / 2 - w.start) / (w.end - w.start)
        assert 0.3 < depth < 0.7, depth  # centred
        assert w.start == 0 or text[w.start - 2 : w.start] in (". ", "\n\n")  # starts at a sentence
        assert text[w.end - 1] == "." or w.end == len(text)  # and ends with one
    with pytest.raises(ValueError):
        qa.build_windows(text, qs, 4, _quarter_tokens)


# ----------------------------------------------------------------- end to end


def test_qa_runs_on_the_tiny_model_and_writes_its_files(tiny_model_path, tmp_path):
    text, qs = _synthetic()
    book = tmp_path / "book.txt"
    book.write_text(text, encoding="utf-8")
    qfile = tmp_path / "questions.json"
    qfile.write_text(
        json.dumps(
            {
                "version": 1,
                "description": "synthetic",
                "questions": [
                    {
                        "id": q.id,
                        "book": str(book),
                        "question": q.question,
                        "answer_prefix": q.answer_prefix,
                        "expected": [list(s) for s in q.expected],
                        "source": q.source,
                        "char_offset": q.char_offset,
                    }
                    for q in qs
                ],
            }
        ),
        encoding="utf-8",
    )
    p = argparse.ArgumentParser()
    qa.add_arguments(p)
    args = p.parse_args(
        [
            "--model",
            str(tiny_model_path),
            "--questions",
            str(qfile),
            "--contexts",
            "512,1k",
            "--budgets",
            "128,192",
            "--sink",
            "8",
            "--ring",
            "16",
            "--max-tokens",
            "6",
            "--threads",
            "1",
            "--skv-opt",
            "max_sentence_len=64",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    cfg = qa.config_from_args(args)
    assert [k for k, _ in cfg.candidates()] == [
        "full",
        "sentence/128",
        "sentence/192",
        "chunk/128",
        "chunk/192",
        "window/128",
        "window/192",
    ]
    data = qa.run_qa(cfg, log=lambda s: None)
    assert data["benchmark"] == "qa" and not data["partial"]
    saved = json.loads((tmp_path / "out" / "qa.json").read_text())
    assert saved["config"]["contexts"] == [512, 1024] and saved["config"]["skv_options"] == {
        "max_sentence_len": 64
    }
    assert len(saved["results"]) == 4  # 2 questions x 2 contexts
    for r in saved["results"]:
        assert "skipped" not in r and r["source_sentences"]
        assert set(r["policies"]) == set(saved["config"]["candidates"])
        assert r["policies"]["full"]["source_retrieved"] is None
        for k, v in r["policies"].items():
            assert isinstance(v["correct"], bool) and isinstance(v["answer"], str)
            assert v["correct"] == qa.score_answer(r["expected"], v["answer"])
            if k != "full" and v["n_tokens"] > 1:
                assert isinstance(v["source_retrieved"], bool)
    for w in saved["windows"]:
        assert w["tokens"] <= w["context"] and not w["truncated"]
    rows = saved["summary"]["rows"]
    assert {(r["context"], r["label"]) for r in rows} == {
        (c, k) for c in (512, 1024) for k in saved["config"]["candidates"]
    }
    for r in rows:
        assert r["n"] == 2 and 0.0 <= r["accuracy"] <= 1.0
        assert set(r) >= {"retrieval_recall", "kept_of_full", "kept", "full_correct"}
        assert r["kept_of_full"] is None or 0.0 <= r["kept_of_full"] <= 1.0
    assert [m["label"] for m in saved["summary"]["memory_check"]] == ["window/128", "window/192"] * 2
    md = (tmp_path / "out" / "qa.md").read_text()
    assert "kept of full" in md and "Memory check" in md


def test_eval_qa_is_registered():
    from engine.cli.bench import add_eval_parser

    p = argparse.ArgumentParser()
    add_eval_parser(p.add_subparsers(dest="command"))
    args = p.parse_args(["eval", "qa", "--contexts", "8k,16k", "--budgets", "1024,2048", "--limit", "3"])
    assert (
        args.eval_command == "qa" and args.contexts == "8k,16k" and args.limit == 3 and args.max_tokens == 32
    )


def test_variants_parse_typed_and_refuse_unknown_options():
    assert qa.parse_variant("heads=gqa:heads,dense_layers:2") == (
        "heads",
        {"gqa": Gqa.HEADS, "dense_layers": 2},
    )
    assert qa.parse_variant("or=oracle:tokens") == ("or", {"oracle": Oracle.TOKENS})
    assert qa.parse_variant("plain+qdense=") == ("plain+qdense", {})
    for bad, what in (
        ("nolabel", "LABEL="),
        ("x=nope:1", "unknown option"),
        ("x=gqa:mean", "GQA"),
        ("x=neighbours:9", "neighbours"),
        ("x=budget:50", "budget"),
    ):
        with pytest.raises(ValueError, match=what):
            qa.parse_variant(bad)


def test_variants_and_the_trace_run_on_the_tiny_model(tiny_model_path, tmp_path):
    text, qs = _synthetic()
    book = tmp_path / "book.txt"
    book.write_text(text, encoding="utf-8")
    cfg = qa.QaConfig(
        model=str(tiny_model_path),
        questions=qs[:1],
        contexts=(512,),
        policies=("full", "sentence"),
        budgets=(128,),
        sink=8,
        ring=16,
        max_tokens=5,
        threads=1,
        texts={qs[0].book: text},
        out=tmp_path / "out",
    )
    cfg.variants = (qa.parse_variant("or-tok=oracle:tokens"), qa.parse_variant("heads=gqa:heads"))
    cfg.trace = ("all",)
    assert [k for k, _ in cfg.candidates()] == ["full", "sentence/128", "or-tok", "heads"]
    data = qa.run_qa(cfg, log=lambda s: None)
    (r,) = data["results"]
    n = r["policies"]["full"]["n_tokens"]
    assert n > 0 and "trace" not in r["policies"]["full"]
    for k in ("sentence/128", "or-tok", "heads"):
        t = r["policies"][k]["trace"]
        assert len(t["logp"]) == len(t["top"]) == len(t["source_selections"]) == n
        assert all(x <= 0.0 for x in t["logp"])
        assert t["first_divergence"] == next((i for i, ok in enumerate(t["top"]) if not ok), None)
        assert t["n_selections"] > 0
    assert {row["label"] for row in data["summary"]["trace"]} <= {"sentence/128", "or-tok", "heads"}
    assert (
        "Trace along full's answer" in (tmp_path / "out" / "qa.md").read_text()
        or not data["summary"]["trace"]
    )
