import sys
from dataclasses import replace

sys.path.insert(0, ".")
from engine.bench.harness import load_book_text
from engine.documents import Document
from engine.models import default_model_path
from engine.params import DEFAULT_PARAMS, SelectAt
from engine.session import Session, SessionConfig

text = load_book_text("frankenstein.txt")[:12_000]
end = text.find("_To Mrs. Saville")
qs = [
    "In which city is the writer of the first letter when he writes it?",
    "What does the writer feel playing upon his cheeks?",
    "What does the writer hope to discover near the pole?",
]
s = Session(SessionConfig(str(default_model_path()), n_ctx=4096, n_threads=2, skv=DEFAULT_PARAMS))
s.load_documents([Document.from_text("frankenstein.txt", text)])
snap = s.snapshot()
for label, p in [
    ("default", DEFAULT_PARAMS),
    ("step", replace(DEFAULT_PARAMS, select_at=SelectAt.STEP)),
    ("step+xs", replace(DEFAULT_PARAMS, select_at=SelectAt.STEP, exclude_sink=1)),
]:
    front = 0
    for q in qs:
        s.restore(snap)
        s.set_params(p)
        r = s.ask(q, max_tokens=12)
        top = s.retrieved(r.steps, top=1)
        c = s.span_of(top[0]["sentence"]).char_start
        front += c < end
        print(label, q[:40], "->", repr(top[0]["text"][:50]), "FRONT" if c < end else "")
    print(label, "front matter first for", front, "of 3", flush=True)
s.close()
