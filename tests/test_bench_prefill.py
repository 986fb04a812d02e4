"""`skv bench prefill` on the tiny model: each row of the time to first token is measured and written, SKV's
prefill beside the stock context's on the same tokens."""

from __future__ import annotations

import json

from engine.cli import main


def test_bench_prefill_writes_every_row(tiny_model_path, tmp_path, capsys):
    rc = main(
        [
            "bench",
            "prefill",
            "--model",
            str(tiny_model_path),
            "--contexts",
            "1k",
            "--threads",
            "1",
            "--n-batch",
            "256",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0, capsys.readouterr()
    row = json.loads((tmp_path / "prefill.json").read_text())["results"][0]
    assert 900 <= row["tokens"] <= 1024
    assert all(
        row[k] > 0
        for k in ("read_s", "prefill_skv_s", "prefill_stock_s", "save_s", "question_to_first_token_s")
    )
    assert row["ttft_s"] >= row["prefill_skv_s"] + row["read_s"]
    assert "SKV overhead" in (tmp_path / "prefill.md").read_text()
