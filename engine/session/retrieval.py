"""Which sentences decode steps attended: one step's selection read from the native cache (merged over SKV
layers and KV heads, and per layer), and the top sentences of an answer by weight."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.native import Policy

if TYPE_CHECKING:
    from engine.session.core import Session


@dataclass(frozen=True, slots=True)
class StepRetrieval:
    """Sentences attended at one decode step, merged over SKV layers and heads: (native id, count)."""

    step: int
    counts: tuple[tuple[int, int], ...]
    n_selections: int  # layers x heads
    # per SKV layer (model layer id): (native id, how many of its KV heads chose it)
    layers: tuple[tuple[int, tuple[tuple[int, int], ...]], ...] = ()
    n_head_kv: int = 1


def read_step(session: Session, step: int) -> StepRetrieval | None:
    """The sentences the last decode step attended, merged over SKV layers and KV heads."""
    if session.skv is None or session.skv.get_params().policy == Policy.FULL:
        return None
    st = session.skv.stats()
    counts: dict[int, int] = {}
    per_layer = []
    for li, layer_id in enumerate(session._skv_layers):
        mine: dict[int, int] = {}
        for h in range(st.n_head_kv):
            for pick in session.skv.selection(li, h):
                mine[pick.entry] = mine.get(pick.entry, 0) + 1
        for sid, n in mine.items():
            counts[sid] = counts.get(sid, 0) + n
        per_layer.append((layer_id, tuple(sorted(mine.items()))))
    return StepRetrieval(step, tuple(sorted(counts.items())), st.n_layers * st.n_head_kv, tuple(per_layer),
                         st.n_head_kv)


def top_sentences(session: Session, steps: list[StepRetrieval], top: int = 10) -> list[dict]:
    """Top sentences by weight: the fraction of (step, layer, head) selections that chose them."""
    total = sum(s.n_selections for s in steps)
    if total == 0:
        return []
    counts: dict[int, int] = {}
    for s in steps:
        for sid, n in s.counts:
            counts[sid] = counts.get(sid, 0) + n
    out = []
    for sid, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        sp = session.span_of(sid)
        if sp is None or sp.doc < 0:
            continue
        doc = session.documents[sp.doc]
        out.append({"doc": doc.name, "location": doc.location(sp.char_start), "text": sp.text.strip(),
                    "weight": n / total, "sentence": sid})
        if len(out) >= top:
            break
    return out
