"""Which sentences decode steps attended: one step's selection read from the native cache (merged over SKV
layers and KV heads, and per layer), and the top sentences of an answer by weight."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.native import Policy
from engine.session.conversation import turn_entry

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
    # (native id, sum over the selections that chose it of 1 / (1 + its rank there)): how high it was chosen
    ranks: tuple[tuple[int, float], ...] = ()


def read_step(session: Session, step: int) -> StepRetrieval | None:
    """The sentences the last decode step attended, merged over SKV layers and KV heads."""
    if session.skv is None or session.skv.get_params().policy == Policy.FULL:
        return None
    st = session.skv.stats()
    counts: dict[int, int] = {}
    ranks: dict[int, float] = {}
    per_layer = []
    for li, layer_id in enumerate(session._skv_layers):
        mine: dict[int, int] = {}
        for h in range(st.n_head_kv):
            for rank, pick in enumerate(session.skv.selection(li, h)):  # in descending score
                mine[pick.entry] = mine.get(pick.entry, 0) + 1
                ranks[pick.entry] = ranks.get(pick.entry, 0.0) + 1.0 / (1 + rank)
        for sid, n in mine.items():
            counts[sid] = counts.get(sid, 0) + n
        per_layer.append((layer_id, tuple(sorted(mine.items()))))
    return StepRetrieval(step, tuple(sorted(counts.items())), st.n_layers * st.n_head_kv, tuple(per_layer),
                         st.n_head_kv, tuple(sorted(ranks.items())))


def top_sentences(session: Session, steps: list[StepRetrieval], top: int = 10, skip_turn: int = 0) -> list[dict]:
    """Top sentences: `weight` is the fraction of (step, layer, head) selections that chose them; they are ranked
    by how high they were chosen (reciprocal rank summed over the selections; with a budget that takes most
    entries at every step, many share the top weight). Documents' sentences and earlier turns' (doc
    "conversation", turn, role); not the format's text, nor turn `skip_turn` (the question being answered: its own
    sentences are not a source)."""
    total = sum(s.n_selections for s in steps)
    if total == 0:
        return []
    counts: dict[int, int] = {}
    ranks: dict[int, float] = {}
    for s in steps:
        for sid, n in s.counts:
            counts[sid] = counts.get(sid, 0) + n
        for sid, r in s.ranks:
            ranks[sid] = ranks.get(sid, 0.0) + r
    out = []
    for sid, n in sorted(counts.items(), key=lambda kv: (-ranks.get(kv[0], 0.0), -kv[1], kv[0])):
        sp = session.span_of(sid)
        if sp is None:
            continue
        if sp.doc < 0:
            if sp.role and sp.turn != skip_turn:
                out.append(turn_entry(sp, sid, n / total))
                if len(out) >= top:
                    break
            continue
        doc = session.documents[sp.doc]
        out.append({"doc": doc.name, "location": doc.location(sp.char_start), "text": sp.text.strip(),
                    "weight": n / total, "sentence": sid})
        if len(out) >= top:
            break
    return out
