"""`skv eval niah`: the task generators follow RULER's definitions, scoring counts the expected strings, needles
land between sentences in order, and the harness runs end to end on the tiny model (scores are not asserted: the
tiny model's weights are random)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.bench import niah

BOOK = " ".join(f"The river ran past mill number {i}. Nobody knew why it was there." for i in range(400))


@pytest.mark.parametrize("name", niah.TASKS)
def test_tasks_hold_their_answers(name):
    t = niah.make_task(name, np.random.default_rng(3))
    n = {"single": 1, "multikey": 4, "multivalue": 4, "vt": 5}[name]
    assert len(t.needles) == n and t.question and t.answer_prefix
    joined = " ".join(t.needles)
    assert all(v in joined for v in t.expected)
    perfect = " ".join(t.expected)
    assert niah.score(t, perfect) == 1.0 and niah.score(t, "no idea") == 0.0
    if name == "multivalue":
        assert niah.score(t, t.expected[0]) == 0.25
    if name == "vt":  # the chain is in order: the first needle holds the value
        assert t.needles[0].endswith(f"= {t.question.split('value ')[1].split()[0]}.")


def test_needles_are_inserted_between_sentences_in_order():
    rng = np.random.default_rng(0)
    needles = ["VAR X1 = 5.", "VAR X2 = X1.", "VAR X3 = X2."]
    text, spans = niah.insert_needles(BOOK, needles, rng)
    assert [text[a:b] for a, b in spans] == needles
    assert spans == sorted(spans)
    for a, _ in spans:
        assert text[a - 2 : a] == ". ", text[a - 10 : a + 5]
    assert text.replace("VAR X1 = 5. ", "").replace("VAR X2 = X1. ", "").replace("VAR X3 = X2. ", "") == BOOK


def test_niah_runs_on_the_tiny_model_and_writes_its_files(tiny_model_path, tmp_path):
    cfg = niah.NiahConfig(
        model=str(tiny_model_path),
        tasks=("single", "vt"),
        lengths=(1024,),
        policies=("full", "sentence", "window"),
        budget=256,
        sink=8,
        ring=16,
        threads=1,
        text=BOOK,
        book="inline",
        out=tmp_path,
    )
    data = niah.run_niah(cfg, log=lambda s: None)
    assert data["benchmark"] == "niah" and not data["partial"] and len(data["cells"]) == 2
    for c in data["cells"]:
        assert set(c["policies"]) == {"full/256", "sentence/256", "window/256"}
        assert c["needle_sentences"], "the needles' sentences were found in the session's table"
        assert all(0.0 <= p["score"] <= 1.0 for p in c["policies"].values())
        assert 0.0 <= c["policies"]["sentence/256"]["needle_recall_first"] <= 1.0
        assert "needle_recall_first" not in c["policies"]["full/256"]
    assert json.loads((tmp_path / "niah.json").read_text())["config"]["tasks"] == ["single", "vt"]
    assert "recall" in (tmp_path / "niah.md").read_text()
