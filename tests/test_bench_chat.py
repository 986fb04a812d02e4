"""`skv bench chat` on the tiny model: a reopened conversation (saved documents + replayed turns) continues with the
same logits as the original one, and the figures are written."""

from __future__ import annotations

import json

from engine.cli import main


def test_bench_chat_reopens_a_conversation_exactly(tiny_model_path, tmp_path, capsys):
    rc = main(
        [
            "bench",
            "chat",
            "--model",
            str(tiny_model_path),
            "--context",
            "600",
            "--turns",
            "2",
            "--max-tokens",
            "12",
            "--threads",
            "1",
            "--budget",
            "128",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0, capsys.readouterr()
    data = json.loads((tmp_path / "chat.json").read_text())
    assert data["documents_restored"] and data["next_turn_logits_identical"]
    assert data["turn_tokens"] > 2 * 12 and 0 < data["restore_s"] and data["restore_over_original"] > 0
    assert "restore / original" in (tmp_path / "chat.md").read_text()


def test_bench_chat_refuses_bad_options(capsys):
    assert main(["bench", "chat", "--turns", "9"]) == 2
    assert "--turns" in capsys.readouterr().err
