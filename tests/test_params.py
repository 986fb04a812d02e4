"""One home for every default: engine/params.py declares them; the CLI, server, app and benchmarks read it."""

from __future__ import annotations

import re
from pathlib import Path

from engine import params

ROOT = Path(__file__).resolve().parent.parent

# literals that used to be repeated across modules: each may appear only in engine/params.py now
REPEATED = [
    (r"n_ctx: int = (8192|32768)\b", "a context default"),
    (r"default=(8192|32768)\b", "a context default"),
    (r"(=|default=) ?8765\b", "the server port"),
    (r"max_tokens: int = (128|256|512)\b", "an answer-length default"),
    (r"\"--max-tokens\", type=int, default=(128|512)\b", "an answer-length default"),
    (r"else 128\b", "max_sentence_len's fallback"),
    (r"\"--threads\", type=int, default=2\b", "the thread default"),
    (r"n_threads: int = 2\b", "the thread default"),
    (r"max_queue: int = 16\b", "the server queue"),
    (r"budget <= self\.sink \+ self\.ring", "the budget rule"),
]


def test_each_default_is_declared_once():
    hits = []
    for top in ("engine", "app"):
        for path in (ROOT / top).rglob("*.py"):
            if path.name == "params.py" and path.parent.name == "engine":
                continue
            text = path.read_text(encoding="utf-8")
            for pat, what in REPEATED:
                for m in re.finditer(pat, text):
                    line = text.count("\n", 0, m.start()) + 1
                    hits.append(f"{path.relative_to(ROOT)}:{line}: {what} ({m.group(0)})")
    assert not hits, "\n".join(hits)


def test_the_budget_rule_and_names():
    assert params.budget_problem(1024, 32, 64) == ""
    assert "sink + ring" in params.budget_problem(96, 32, 64)
    assert params.POLICY_NAMES[0] == params.DEFAULT_PARAMS.policy.name.lower()
    assert set(params.POLICY_NAMES) == {p.name.lower() for p in params.Policy}
    assert params.QUESTION_ATTENTION in params.QUESTION_ATTENTION_CHOICES
    assert params.SENTENCE_START in params.SENTENCE_START_CHOICES


def test_params_has_no_ctypes():
    text = (ROOT / "engine" / "params.py").read_text(encoding="utf-8")
    assert "ctypes" not in text.split('"""', 2)[2]  # after the docstring
