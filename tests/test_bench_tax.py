"""`skv bench tax` on the tiny model: the Python share of a decode step and the metadata read are measured and
written."""

from __future__ import annotations

import json

from engine.cli import main


def test_bench_tax_reports_the_python_share_of_a_decode_step(tiny_model_path, tmp_path, capsys):
    rc = main(
        [
            "bench",
            "tax",
            "--model",
            str(tiny_model_path),
            "--contexts",
            "1k",
            "--steps",
            "12",
            "--repeats",
            "1",
            "--threads",
            "1",
            "--budget",
            "256",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0, capsys.readouterr()
    data = json.loads((tmp_path / "tax.json").read_text())
    row = data["results"][0]
    assert row["context"] == 1024 and row["sentences"] > 10 and 0 < row["python_share"] < 1
    assert 0 < row["native_ms_per_token"] < row["loop_ms_per_token"] and data["metadata_read_s"] > 0
