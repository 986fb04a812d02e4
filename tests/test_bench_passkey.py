"""`skv eval passkey` harness on the tiny random-weight model (answers are garbage: only the harness, its files
and its JSON schema are tested), plus the haystack builder and the CLI exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.bench import passkey, report

SKV = Path(sys.executable).parent / "skv"


def run_skv(*args, timeout=120):
    cmd = [str(SKV)] if SKV.exists() else [sys.executable, "-m", "engine.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout)


def test_haystack_places_the_needle_at_its_depth():
    for fmt in passkey.FORMATS:
        for depth in (0.0, 0.5, 1.0):
            hs = passkey.build_haystack(20, depth, 12345, fmt)
            a, b = hs.needle_chars
            assert hs.text[a:b] == passkey.NEEDLE.format(K=12345)
            assert hs.text.count("12345") == 2
            frac = hs.text[:a].count(passkey.FILLER) / 20
            assert frac == depth
        assert hs.text.startswith(passkey.TASK) == (fmt.startswith("landmark") or fmt == "chat")
    assert passkey.first_int(" 86556. Remember") == 86556
    assert passkey.first_int("the key") is None


def test_passkey_runs_and_writes_its_schema(tiny_model_path, tmp_path):
    cfg = passkey.PasskeyConfig(
        model=str(tiny_model_path),
        lengths=(256,),
        depths=(0.2, 0.8),
        budget=128,
        sink=8,
        ring=16,
        max_tokens=3,
        out=tmp_path,
    )
    data = passkey.run_passkey(cfg, log=lambda s: None)
    assert data["benchmark"] == "passkey" and not data["partial"]
    assert len(data["cells"]) == 2
    for c in data["cells"]:
        assert set(c["policies"]) == {"full/128", "sentence/128", "window/128"}
        assert c["needle_sentences"], "the needle's sentences are found in the sentence table"
        assert c["tokens"] <= c["length"] + 16
        for label, p in c["policies"].items():
            assert {
                "answer",
                "parsed",
                "correct",
                "needle_selected_first",
                "needle_selected_any",
                "needle_in_sink_or_ring",
            } <= set(p)
            if label.startswith("full/"):
                assert p["needle_selected_first"] is None
            else:
                assert 0.0 <= p["needle_selected_first"] <= 1.0
        assert c["policies"]["window/128"]["needle_selected_any"] is False
    v = data["verdict"]
    assert v["cells"] == 2 and "sentence_matches_full" in v and "window_cells_outside_window" in v
    assert json.loads((tmp_path / "passkey.json").read_text())["config"]["lengths"] == [256]
    assert "Accuracy per policy" in (tmp_path / "passkey.md").read_text()
    assert (tmp_path / "passkey.png").exists() == report.have_matplotlib()


def test_cli_passkey_exit_codes(tiny_model_path, tmp_path):
    common = [
        "--model",
        str(tiny_model_path),
        "--budget",
        "128",
        "--sink",
        "8",
        "--ring",
        "16",
        "--max-tokens",
        "2",
        "--out",
        str(tmp_path),
    ]
    proc = run_skv("eval", "passkey", "--lengths", "256", "--depths", "0.5", "--format", "session", *common)
    assert proc.returncode == 0, proc.stderr
    assert "verdict:" in proc.stdout
    bad = run_skv("eval", "passkey", "--depths", "1.5", *common)
    assert bad.returncode == 2 and "depths" in bad.stderr and "Traceback" not in bad.stderr
    assert run_skv("eval", "passkey", "--format", "nope", *common).returncode == 2
    assert run_skv("eval").returncode == 2


def test_tables_render():
    t = report.text_table(["a", "bb"], [[1, 2.5], ["x", None]])
    assert t.splitlines()[2].split() == ["1", "2.50"]
    m = report.markdown_table(["a"], [[True]])
    assert m.splitlines()[-1] == "| yes |"


def test_chat_format_and_protocol_variants_run_on_the_tiny_model(tiny_model_path, tmp_path):
    cfg = passkey.PasskeyConfig(
        model=str(tiny_model_path),
        lengths=(256,),
        depths=(0.5,),
        budget=128,
        sink=8,
        ring=16,
        fmt="chat",
        max_tokens=3,
        out=tmp_path,
        question_attention=("policy", "dense"),
        sentence_start=("keep", "dense"),
    )
    labels = [k for k, _ in cfg.candidates()]
    assert labels == ["full/128", "sentence/128", "sentence/128+qdense", "sentence/128+sdense", "window/128"]
    data = passkey.run_passkey(cfg, log=lambda _m: None)
    cell = data["cells"][0]
    assert set(cell["policies"]) == set(labels)
    assert all(isinstance(p["answer"], str) and "correct" in p for p in cell["policies"].values())


def test_multi_needle_haystack_places_each_needle_once_at_its_depth():
    from engine.bench import passkey

    hs = passkey.build_haystack_multi(100, (0.1, 0.5, 0.9), [11111, 22222, 33333], "landmark-qa")
    assert [n.box for n in hs.needles] == [1, 2, 3]
    for n, key in zip(hs.needles, (11111, 22222, 33333), strict=True):
        a, b = n.chars
        assert hs.text[a:b] == passkey.NEEDLE_BOX.format(thing=passkey.thing(n.box), K=key)
        assert hs.text.count(str(key)) == 2
    starts = [n.chars[0] / len(hs.text) for n in hs.needles]
    assert starts == sorted(starts) and abs(starts[1] - 0.5) < 0.05
    assert len({passkey.thing(n.box) for n in hs.needles}) == 3  # each needle names another thing
    assert hs.text.startswith(passkey.TASK)


def test_distinct_needles_are_each_asked_in_their_own_words():
    keys = [11111, 22222, 33333, 44444, 55555]
    hs = passkey.build_haystack_multi(200, (0.1, 0.3, 0.5, 0.7, 0.9), keys, "landmark-qa", "distinct")
    questions = set()
    for n, key in zip(hs.needles, keys, strict=True):
        a, b = n.chars
        assert hs.text[a:b] == passkey.needle_text("distinct", n.box, key)
        assert str(key) in hs.text[a:b] and hs.text.count(str(key)) == 1
        q, prefix = passkey.needle_question("distinct", n.box)
        questions.add(q)
        # the answer prefix is the needle's own words up to the key: the key is what comes next
        assert hs.text[a:b].startswith(prefix + " " + str(key))
    assert len(questions) == 5
    assert "secret number" not in hs.text  # nothing of the alike set
    # the alike set is unchanged by the option (earlier rounds' haystacks stay reproducible)
    alike = passkey.build_haystack_multi(200, (0.1, 0.3, 0.5, 0.7, 0.9), keys, "landmark-qa")
    assert (
        alike.text
        == passkey.build_haystack_multi(200, (0.1, 0.3, 0.5, 0.7, 0.9), keys, "landmark-qa", "alike").text
    )
    assert passkey.needle_text("alike", 2, 7) == passkey.NEEDLE_BOX.format(thing=passkey.thing(2), K=7)


def test_more_distinct_needles_than_the_set_holds_is_an_option_error():
    import argparse

    from engine.bench.harness import OptionError

    p = argparse.ArgumentParser()
    passkey.add_arguments(p)
    args = p.parse_args(["--needles", "--needle-set", "distinct", "--depths", "0.1,0.2,0.3,0.4,0.5,0.6"])
    with pytest.raises(OptionError, match="at most 5 depths"):
        passkey.config_from_args(args)


def test_score_distances_make_a_sentence_candidate_each(tiny_model_path, tmp_path):
    from engine.params import SCORE_AUTO, SCORE_REAL

    cfg = passkey.PasskeyConfig(
        model=str(tiny_model_path),
        policies=("sentence", "full"),
        budget=128,
        sink=8,
        ring=16,
        score_distances=(SCORE_AUTO, SCORE_REAL, 64),
    )
    cands = dict(cfg.candidates())
    assert set(cands) == {"sentence/128", "sentence/128@real", "sentence/128@64", "full/128"}
    assert [cands[k].score_distance for k in ("sentence/128", "sentence/128@real", "sentence/128@64")] == [
        SCORE_AUTO,
        SCORE_REAL,
        64,
    ]
    common = [
        "--model",
        str(tiny_model_path),
        "--budget",
        "128",
        "--sink",
        "8",
        "--ring",
        "16",
        "--max-tokens",
        "2",
        "--lengths",
        "256",
        "--depths",
        "0.5",
        "--policies",
        "sentence",
        "--out",
        str(tmp_path),
    ]
    proc = run_skv("eval", "passkey", "--score-distances", "auto,real", "--budgets", "192", *common)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "passkey.json").read_text())
    assert set(data["cells"][0]["policies"]) == {
        "sentence/128",
        "sentence/128@real",
        "sentence/192",
        "sentence/192@real",
    }
    assert data["config"]["score_distances"] == ["auto", "real"]
    bad = run_skv("eval", "passkey", "--score-distances", "near", *common)
    assert bad.returncode == 2 and "score distance" in bad.stderr and "Traceback" not in bad.stderr


def test_layouts_make_a_sentence_candidate_each(tiny_model_path):
    from engine.params import Layout

    cfg = passkey.PasskeyConfig(
        model=str(tiny_model_path),
        policies=("sentence", "full"),
        budget=128,
        sink=8,
        ring=16,
        layouts=(Layout.ORDER, Layout.STACK),
    )
    cands = dict(cfg.candidates())
    assert set(cands) == {"sentence/128", "sentence/128@stack", "full/128"}
    assert cands["sentence/128"].layout == Layout.ORDER and cands["sentence/128@stack"].layout == Layout.STACK
    bad = run_skv("eval", "passkey", "--model", str(tiny_model_path), "--layouts", "order,diagonal")
    assert bad.returncode == 2 and "remap layout" in bad.stderr and "Traceback" not in bad.stderr


def test_prefill_cache_restores_the_haystack_instead_of_prefilling(tiny_model_path, tmp_path):
    """A second run with --prefill-cache restores the first run's snapshot: the same answers, the first run's prefill
    time reported, and no prefill ubatch decoded."""
    from engine.params import Layout

    def run(out: str) -> tuple[dict, int]:
        cfg = passkey.PasskeyConfig(
            model=str(tiny_model_path),
            lengths=(256,),
            depths=(0.3, 0.7),
            budget=128,
            sink=8,
            ring=16,
            max_tokens=3,
            needles=2,
            policies=("sentence",),
            layouts=(Layout.ORDER, Layout.STACK),
            out=tmp_path / out,
            prefill_cache=tmp_path / "cache",
        )
        runner = passkey.PasskeyRunner(cfg)
        try:
            decoded = []
            real = runner.session.begin_prefill
            runner.session.begin_prefill = lambda *a, **k: decoded.append(1) or real(*a, **k)
            cells: list[dict] = []
            prefills: list[dict] = []
            passkey._run_multi(cfg, runner, np.random.default_rng(0), 256, cells, prefills, lambda s: None)
        finally:
            runner.close()
        return {"cells": cells, "prefills": prefills}, len(decoded)

    first, n1 = run("a")
    second, n2 = run("b")
    assert (n1, n2) == (1, 0)
    assert len(list((tmp_path / "cache").glob("passkey-*.pkl"))) == 1
    assert second["prefills"][0]["prefill_s"] == first["prefills"][0]["prefill_s"]
    for a, b in zip(first["cells"], second["cells"], strict=True):
        assert {k: v["answer"] for k, v in a["policies"].items()} == {
            k: v["answer"] for k, v in b["policies"].items()
        }
