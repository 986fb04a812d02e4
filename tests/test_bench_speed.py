"""`skv bench speed` harness on the tiny random-weight model: it runs, writes its files, keeps its JSON schema,
and the CLI exits with the contract's codes. Timings are never asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.bench import harness, report, speed

SKV = Path(sys.executable).parent / "skv"
TEXT = " ".join(
    f"Sentence number {i} tells of a river, a hill and {i % 7} small boats. It is short." for i in range(400)
)


def run_skv(*args, timeout=120):
    cmd = [str(SKV)] if SKV.exists() else [sys.executable, "-m", "engine.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout)


def test_speed_runs_and_writes_its_schema(tiny_model_path, tmp_path):
    cfg = speed.SpeedConfig(
        model=str(tiny_model_path),
        contexts=(256, 384),
        steps=3,
        repeats=2,
        budget=128,
        sink=8,
        ring=16,
        text=TEXT,
        book="inline",
        out=tmp_path,
    )
    data = speed.run_speed(cfg, log=lambda s: None)
    assert data["benchmark"] == "speed" and data["partial"] is False
    assert [r["context"] for r in data["results"]] == [256, 384]
    labels = {"stock", "sentence/128", "window/128", "full/128"}
    for r in data["results"]:
        assert set(r["ms_per_token"]) == labels
        assert all(v > 0 for v in r["ms_per_token"].values())
        assert all(len(v) == 2 for v in r["ms_per_token_run_medians"].values())
        assert r["prefill_tokens"] <= r["context"] and r["prefill_tokens"] > r["context"] // 2
        m = r["memory"]
        assert (
            m["host_kv_bytes"] > 0
            and m["device_skv_bytes"] == m["device_vec_bytes"] + m["device_stage_bytes"]
        )
        assert r["prefill"]["stock"]["tokens"] == r["prefill"]["skv"]["tokens"] == r["prefill_tokens"]
        assert r["rows_uploaded_per_step"]["sentence/128"] > 0
    for key in ("date", "nproc", "uptime_start", "uptime_end"):
        assert key in data["machine"]
    on_disk = json.loads((tmp_path / "speed.json").read_text())
    assert on_disk["results"][0]["ms_per_token"].keys() == data["results"][0]["ms_per_token"].keys()
    md = (tmp_path / "speed.md").read_text()
    assert "stock/skv" in md and "sentence/128 ms/tok" in md
    assert (tmp_path / "speed_decode.png").exists() == report.have_matplotlib()
    h, rows = speed.summarize(data["results"], "sentence/128")
    assert len(rows) == 2 and len(rows[0]) == len(h)


def test_targets_are_checked_from_results():
    def res(ctx, stock, skv, host=100, dev=10):
        return {
            "context": ctx,
            "ms_per_token": {"stock": stock, "sentence/1024": skv},
            "memory": {"host_kv_bytes": host, "device_skv_bytes": dev},
        }

    t = speed.check_targets(
        [res(1024, 10, 10), res(16384, 14, 10.5), res(32768, 20, 11, 800, 90)], "sentence/1024"
    )
    assert [x["met"] for x in t] == [True, True, True, True]
    assert t[1]["ceiling"] == pytest.approx(1.4)


def test_context_list_parsing():
    assert harness.int_list("1k, 4k,300") == (1024, 4096, 300)
    with pytest.raises(ValueError):
        harness.int_list(",")


@pytest.mark.parametrize(
    "bad, says",
    [("4q,64k", "'4q' is not a token count"), ("-5", "must be positive"), ("0k", "must be positive")],
)
def test_a_bad_context_list_is_a_short_option_error(bad, says):
    with pytest.raises(harness.OptionError, match=says):
        harness.int_list(bad)


def test_cli_speed_exit_codes(tiny_model_path, tmp_path):
    book = tmp_path / "book.txt"
    book.write_text(TEXT)
    out = tmp_path / "out"
    common = [
        "--model",
        str(tiny_model_path),
        "--book",
        str(book),
        "--out",
        str(out),
        "--budget",
        "128",
        "--sink",
        "8",
        "--ring",
        "16",
        "--steps",
        "2",
        "--repeats",
        "1",
    ]
    proc = run_skv("bench", "speed", "--contexts", "256", *common)
    assert proc.returncode == 0, proc.stderr
    assert "stock/skv" in proc.stdout
    assert json.loads((out / "speed.json").read_text())["results"][0]["context"] == 256
    bad = run_skv("bench", "speed", "--contexts", "10", *common)
    assert bad.returncode == 2 and bad.stderr.startswith("skv: error:") and "Traceback" not in bad.stderr
    bad = run_skv("bench", "speed", "--policies", "bogus", *common)
    assert bad.returncode == 2 and "unknown policy" in bad.stderr
    assert run_skv("bench").returncode == 2
