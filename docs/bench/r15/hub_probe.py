"""Round 15's front-matter hub probe: which sentence the panel ranks first after a 12-token answer, for three
questions about Letter 1 of frankenstein (its first 12,000 characters at 4k, title and contents included), under
the default, the same-step choice, and the same-step choice without the sink's keys. Run from the repo root:
.venv/bin/python docs/bench/r15/hub_probe.py"""

from dataclasses import replace

from engine.bench.harness import load_book_text
from engine.documents import Document
from engine.models import default_model_path
from engine.params import DEFAULT_PARAMS, SelectAt
from engine.session import Session, SessionConfig

QUESTIONS = [
    "In which city is the writer of the first letter when he writes it?",
    "What does the writer feel playing upon his cheeks?",
    "What does the writer hope to discover near the pole?",
]
CANDIDATES = [
    ("default", DEFAULT_PARAMS),
    ("step", replace(DEFAULT_PARAMS, select_at=SelectAt.STEP)),
    ("step+xs", replace(DEFAULT_PARAMS, select_at=SelectAt.STEP, exclude_sink=1)),
]


def main() -> None:
    text = load_book_text("frankenstein.txt")[:12_000]
    end = text.find("_To Mrs. Saville")  # the first letter starts here: everything before is front matter
    s = Session(SessionConfig(str(default_model_path()), n_ctx=4096, n_threads=2, skv=DEFAULT_PARAMS))
    try:
        s.load_documents([Document.from_text("frankenstein.txt", text)])
        snap = s.snapshot()
        for label, params in CANDIDATES:
            front = 0
            for q in QUESTIONS:
                s.restore(snap)
                s.set_params(params)
                r = s.ask(q, max_tokens=12)
                top = s.retrieved(r.steps, top=1)[0]
                first = s.span_of(top["sentence"]).char_start < end
                front += first
                print(label, q[:40], "->", repr(top["text"][:50]), "FRONT" if first else "")
            print(label, "front matter first for", front, "of 3", flush=True)
    finally:
        s.close()


if __name__ == "__main__":
    main()
