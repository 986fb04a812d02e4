"""Issue 4: `skv ask` and `skv chat` over documents: the saved session is restored on the second run
(stats.session_restored), over-long documents are never cut silently ("N of M tokens fit" on stderr and in stats),
--range picks what goes in, and chat answers every stdin line until EOF. Runs on the tiny random-weight model."""

from __future__ import annotations

import io
import json

import pytest
from skv_harness import book_text

from engine.cli import main


@pytest.fixture()
def book(tmp_path, monkeypatch):
    monkeypatch.setenv("SKV_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "book.txt"
    path.write_text(book_text(n_chars=6000), encoding="utf-8")
    return path


def _ask(capsys, model, book, *extra: str, question: str = "Who is there?") -> tuple[dict, str]:
    rc = main(
        ["ask", "--model", str(model), "--doc", str(book), "--max-tokens", "4", "--json", *extra, question]
    )
    out = capsys.readouterr()
    assert rc == 0, out.err
    return json.loads(out.out), out.err


def test_second_ask_restores_the_saved_session(capsys, tiny_model_path, book):
    first, _ = _ask(capsys, tiny_model_path, book, "--n-ctx", "4096")
    second, _ = _ask(capsys, tiny_model_path, book, "--n-ctx", "4096", question="What did she say?")
    assert first["stats"]["session_restored"] is False and first["stats"]["prefill_s"] > 0
    assert second["stats"]["session_restored"] is True and second["stats"]["prefill_s"] == 0.0
    assert second["stats"]["prefill_tokens"] == first["stats"]["prefill_tokens"]
    third, _ = _ask(capsys, tiny_model_path, book, "--n-ctx", "4096", "--no-session-cache")
    assert third["stats"]["session_restored"] is False
    assert main(["cache", "list"]) == 0 and "book.txt" in capsys.readouterr().out


def test_overlong_document_says_what_fit(capsys, tiny_model_path, book):
    res, err = _ask(capsys, tiny_model_path, book, "--n-ctx", "512")
    st = res["stats"]
    assert st["truncated"] is True and st["doc_tokens_loaded"] < st["doc_tokens_total"]
    assert f"{st['doc_tokens_loaded']} of {st['doc_tokens_total']} document tokens fit" in err
    assert "--range" in err


def test_range_loads_the_chosen_sentences(capsys, tiny_model_path, book):
    whole, _ = _ask(capsys, tiny_model_path, book, "--n-ctx", "4096")
    part, err = _ask(capsys, tiny_model_path, book, "--n-ctx", "4096", "--range", "10:20")
    st = part["stats"]
    assert st["session_restored"] is False  # another range, another saved session
    assert st["doc_tokens_total"] == whole["stats"]["doc_tokens_total"]
    assert st["doc_tokens_loaded"] == st["doc_tokens_selected"] < st["doc_tokens_total"]
    assert st["truncated"] is False and "fit" not in err
    chars, _ = _ask(capsys, tiny_model_path, book, "--n-ctx", "4096", "--range", "chars:1000:")
    assert 0 < chars["stats"]["doc_tokens_loaded"] < st["doc_tokens_total"]


@pytest.mark.parametrize("value", ["10", "5:2", "x:y", "100000:"])
def test_bad_range_is_a_usage_error(capsys, tiny_model_path, book, value):
    rc = main(
        [
            "ask",
            "--model",
            str(tiny_model_path),
            "--doc",
            str(book),
            "--n-ctx",
            "4096",
            "--range",
            value,
            "Q?",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("skv: error:") and err.count("\n") == 1


def test_chat_answers_every_line_until_eof(capsys, monkeypatch, tiny_model_path, book):
    monkeypatch.setattr("sys.stdin", io.StringIO("Who is there?\n\nWhat did she say?\n"))
    rc = main(
        [
            "chat",
            "--model",
            str(tiny_model_path),
            "--doc",
            str(book),
            "--n-ctx",
            "4096",
            "--max-tokens",
            "3",
            "--answer-prefix",
            "Answer is",
        ]
    )
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert out.out.count("Answer is") == 2  # the blank line is skipped
    assert "prefilled" in out.err
    monkeypatch.setattr("sys.stdin", io.StringIO("Who is there?\n"))
    assert (
        main(
            [
                "chat",
                "--model",
                str(tiny_model_path),
                "--doc",
                str(book),
                "--n-ctx",
                "4096",
                "--max-tokens",
                "3",
            ]
        )
        == 0
    )
    assert "restored" in capsys.readouterr().err


def _chat_json(capsys, monkeypatch, model, book, lines: str, *extra: str) -> list[dict]:
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    rc = main(["chat", "--model", str(model), "--doc", str(book), "--max-tokens", "4", "--json", *extra])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return [json.loads(line) for line in out.out.splitlines()]


def test_chat_json_prints_one_object_per_turn_and_keeps_the_conversation(
    tiny_model_path, book, capsys, monkeypatch
):
    objs = _chat_json(
        capsys, monkeypatch, tiny_model_path, book, "Who is there?\nAnd then?\n", "--n-ctx", "4096"
    )
    assert [o["stats"]["turn"] for o in objs] == [1, 2]
    assert all(set(o) == {"answer", "retrieved", "stats"} for o in objs)
    assert (
        objs[1]["stats"]["context_tokens"] > objs[0]["stats"]["context_tokens"]
    )  # turn 1 stayed in the context
    for e in (e for o in objs for e in o["retrieved"] if e["doc"] == "conversation"):
        assert e["role"] in ("user", "assistant") and e["turn"] == 1 and e["text"]
    fresh = _chat_json(
        capsys, monkeypatch, tiny_model_path, book, "Who is there?\nAnd then?\n", "--n-ctx", "4096", "--fresh"
    )
    assert [o["stats"]["turn"] for o in fresh] == [1, 1]
    assert fresh[0]["stats"]["context_tokens"] == objs[0]["stats"]["context_tokens"]


def test_chat_json_reports_a_turn_that_does_not_fit_and_goes_on(tiny_model_path, book, capsys, monkeypatch):
    # 2048 tokens, ~1.5k of book: the third 200-token answer does not fit after the first two
    objs = _chat_json(
        capsys,
        monkeypatch,
        tiny_model_path,
        book,
        "A?\nB?\nC?\nD?\n",
        "--n-ctx",
        "2048",
        "--max-tokens",
        "200",
        "--ignore-eos",
    )
    errors = [o for o in objs if "error" in o]
    assert errors and "drop the oldest turns" in errors[0]["error"] and len(objs) == 4
    assert [o["stats"]["turn"] for o in objs if "stats" in o][:1] == [1]


def test_ask_shows_the_prefill_progress_on_stderr_only(tiny_model_path, book, capsys):
    data, err = _ask(capsys, tiny_model_path, book, "--n-ctx", "4096")
    lines = [line for line in err.splitlines() if line.startswith("skv: prefill")]
    assert len(lines) >= 2 and "tok/s" in lines[0] and "s left" in lines[0] and " in " in lines[-1], err
    assert data["stats"]["prefill_tokens"] > 512  # stdout is still the one JSON object
    again, err2 = _ask(capsys, tiny_model_path, book, "--n-ctx", "4096")
    assert again["stats"]["session_restored"] and "skv: prefill" not in err2  # a restore prefills nothing


def test_select_at_step_reaches_the_native_cache(capsys, tiny_model_path, book):
    res, _ = _ask(capsys, tiny_model_path, book, "--n-ctx", "4096", "--budget", "256", "--select-at", "step")
    assert res["stats"]["select_at"] == "step" and res["answer"] is not None
    res, _ = _ask(capsys, tiny_model_path, book, "--n-ctx", "4096", "--budget", "256")
    assert res["stats"]["select_at"] == "lag"
