"""`skv bench scale` harness and the native debug fill it stands on, on tiny settings (fixture model, short
contexts): the fill marks exactly the positions it says and is deterministic, works with SentenceKV on and off,
refuses what it cannot do without crashing, and the benchmark writes its files. Timings are never asserted."""

from __future__ import annotations

import json

import numpy as np
import pytest
from eval_capture import LowLevelContext
from tiny_gguf import TinyConfig, find_vocab_file, write_tiny_gguf

from engine import native
from engine.bench import scale
from engine.native import NativeError, SkvContext
from engine.params import Policy, SkvParams

TEXT = " ".join(f"Sentence number {i} tells of a river and {i % 7} boats. It is short." for i in range(300))


def _filled_logits(path, skv: SkvParams | None, seed: int) -> tuple[np.ndarray, int]:
    with LowLevelContext(path, 1024, None, skv=skv, n_threads=1) as c:
        native.debug_fill(c.ctx, 600, seed)
        mem = c.ll.llama_get_memory(c.ctx)
        pos_max = c.ll.llama_memory_seq_pos_max(mem, 0)
        c.n_past = 600
        c.decode([42])  # position 600 attends the 600 filled rows
        return c.logits(), pos_max


def test_debug_fill_marks_the_positions_and_is_seeded(tiny_model_path) -> None:
    a, pos_max = _filled_logits(tiny_model_path, None, seed=1)
    b, _ = _filled_logits(tiny_model_path, None, seed=1)
    c, _ = _filled_logits(tiny_model_path, None, seed=2)
    assert pos_max == 599
    assert np.array_equal(a, b), "the same seed fills the same rows"
    assert np.abs(a - c).max() > 1e-3, "the rows are attended: another seed changes the logits"
    # SentenceKV on with a budget covering the context attends the same rows
    s, _ = _filled_logits(tiny_model_path, SkvParams(Policy.SENTENCE, 4096, 8, 16), seed=1)
    assert np.abs(s - a).max() < 1e-3


def test_debug_fill_refuses_a_used_cache_without_crashing(tiny_model_path) -> None:
    with LowLevelContext(tiny_model_path, 512, None, skv=SkvParams(budget=256), n_threads=1) as c:
        c.decode([1, 2, 3])
        with pytest.raises(NativeError, match="empty"):
            native.debug_fill(c.ctx, 100, 0)
    with LowLevelContext(tiny_model_path, 512, None, n_threads=1) as c:
        with pytest.raises(NativeError):
            native.debug_fill(c.ctx, 100_000, 0)  # larger than the cache
        native.debug_fill(c.ctx, 256, 0)
        assert SkvContext.enabled(c.ctx) is False


def test_sentence_ends_repeat_real_lengths() -> None:
    def tok(s: str) -> list[int]:
        return list(range(len(s.split())))

    from engine.sentences import tokenize_sentences

    _, sents = tokenize_sentences(TEXT, tok, max_tokens=64)
    lengths = [s.n_tokens for s in sents]
    ends = scale.sentence_ends(tok, TEXT, 500, 64)
    assert (
        ends == sorted(ends)
        and 0 < ends[0]
        and ends[-1] < 500 <= ends[-1] + lengths[len(ends) % len(lengths)]
    )
    assert list(np.diff([0, *ends])) == lengths[: len(ends)], "the book's own sentence lengths, in order"


def test_scale_runs_on_the_tiny_model_and_writes_its_files(tiny_model_path, tmp_path) -> None:
    cfg = scale.ScaleConfig(
        model=str(tiny_model_path),
        contexts=(512, 1024),
        steps=3,
        repeats=2,
        budget=128,
        sink=8,
        ring=16,
        text=TEXT,
        book="inline",
        out=tmp_path,
    )
    data = scale.run_scale(cfg, log=lambda s: None)
    assert data["benchmark"] == "scale" and "random weights" in data["note"] and not data["partial"]
    for r in data["results"]:
        assert set(r["ms_per_token"]) == {"stock", "sentence/128", "window/128"}
        assert all(v > 0 for v in r["ms_per_token"].values())
        m = r["memory"]
        assert m["full_kv_bytes"] == m["host_kv_bytes"] > m["device_skv_bytes"] > 0
        assert m["n_sentences"] >= r["n_sentences_declared"] - 1 > 0
        h = r["host_per_step"]["sentence/128"]
        assert h["prepare_ms"] > 0 and h["after_ms"] > 0 and h["rows"] > 0, h
    first, second = data["results"]
    assert first["first_context_interleaved"] is None
    ref = second["first_context_interleaved"]  # the 512 context's SKV session, run in the 1024 row's repeats
    assert ref["context"] == 512 and len(ref["run_medians"]) == 2 and ref["ms_per_token"] > 0
    h, rows = scale.summarize(data["results"], "sentence/128")
    col = h.index("skv/skv@1st")
    assert rows[1][col] == pytest.approx(second["ms_per_token"]["sentence/128"] / ref["ms_per_token"])
    assert rows[0][col] == 1.0
    assert json.loads((tmp_path / "scale.json").read_text())["results"][1]["context"] == 1024
    assert "Speed and memory only" in (tmp_path / "scale.md").read_text()
    t = scale.check_targets(
        [
            dict(data["results"][0], context=1024),
            {
                "context": 65536,
                "ms_per_token": {"stock": 900.0, "sentence/128": 100.0},
                "memory": {"device_skv_bytes": 9, "full_kv_bytes": 100},
            },
        ],
        "sentence/128",
    )
    assert [x["met"] for x in t] == [True, True]
    # the flatness targets, against the first context's steps in the same repeats where the row has them
    base = {"context": 4096, "ms_per_token": {"stock": 50.0, "sentence/128": 80.0}}
    far = {
        "context": 262144,
        "ms_per_token": {"stock": 5000.0, "sentence/128": 110.0},
        "first_context_interleaved": {"context": 4096, "ms_per_token": 90.0, "run_medians": [90.0]},
    }
    t = scale.check_targets([base, dict(far, first_context_interleaved=None)], "sentence/128")
    assert [(x["target"], x["met"]) for x in t] == [("SKV 256k / SKV 4k <= 1.3", False)]  # 110 / 80
    t = scale.check_targets([base, far], "sentence/128")
    assert t[0]["met"] and t[0]["value"] == pytest.approx(110 / 90)


def test_the_shipped_vocabulary_stands_in_for_the_source_tree(tmp_path, monkeypatch) -> None:
    """With an empty cache dir (no llama.cpp source tree) the vocabulary comes from resources/vocab, unpacked once;
    it is the source tree's file byte for byte when that is at hand."""
    from engine.bench import synthetic

    tree = synthetic.find_vocab_file()  # the set-up's source tree, or the shipped copy
    monkeypatch.setenv("SKV_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("SKV_LLAMA_SOURCE", raising=False)
    assert synthetic.source_roots() == []
    got = synthetic.find_vocab_file()
    assert got == tmp_path / "empty-cache" / "vocab" / synthetic.VOCAB_FILE and got.is_file()
    assert tree is not None and got.read_bytes() == tree.read_bytes()
    assert scale.MODEL_FILE.endswith(".gguf") and synthetic.LLAMA_1B_LIKE.n_ctx_train >= 262144


def test_scale_does_not_remap_past_the_trained_length(tmp_path) -> None:
    """The 256k row's steps sit past the synthetic model's trained length: the benchmark measures the selection, so
    no step turns keys to virtual positions (under `auto` every one of them would)."""
    vocab = find_vocab_file()
    if vocab is None:
        pytest.skip("no vocabulary file: run native/build.py first")
    path = write_tiny_gguf(tmp_path / "tiny-512.gguf", vocab, TinyConfig(n_ctx_train=512))
    cfg = scale.ScaleConfig(
        model=str(path),
        contexts=(640,),
        steps=3,
        repeats=1,
        budget=128,
        sink=8,
        ring=16,
        text=TEXT,
        book="inline",
    )
    assert all(c.params.remap == native.Remap.OFF for c in cfg.candidates())
    r = scale.run_scale(cfg, log=lambda s: None)["results"][0]
    assert r["context"] > 512
    assert [h["remapped"] for h in r["host_per_step"].values()] == [0, 0]
