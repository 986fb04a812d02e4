"""Which sentences decode steps attended: one step's selection read from the native cache (merged over SKV
layers and KV heads, and per layer), and the top sentences of an answer by weight."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

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
    """The sentences the last decode step attended, merged over SKV layers and KV heads: one native call for every
    selection, counted with numpy (the per-token cost stays small next to the decode step)."""
    if session.skv is None or session.skv.get_params().policy == Policy.FULL:
        return None
    ids, offs = session.skv.selections()
    n_sel = len(offs) - 1
    n_layers = len(session._skv_layers)
    n_head_kv = n_sel // max(n_layers, 1)
    if len(ids) == 0:
        return StepRetrieval(step, (), n_sel, tuple((lid, ()) for lid in session._skv_layers), n_head_kv, ())
    seg = np.repeat(np.arange(n_sel), np.diff(offs))  # which (layer, head) each id came from
    rank = np.arange(len(ids)) - offs[seg]  # its place in that selection (descending score)
    uniq, inv, counts = np.unique(ids, return_inverse=True, return_counts=True)
    rr = np.bincount(inv, weights=1.0 / (1.0 + rank), minlength=len(uniq))
    width = int(uniq[-1]) + 1
    lkey, lcounts = np.unique((seg // n_head_kv) * width + ids, return_counts=True)
    layer_of, sid_of = np.divmod(lkey, width)
    cuts = np.searchsorted(layer_of, np.arange(n_layers + 1))
    sids, ns = sid_of.tolist(), lcounts.tolist()
    per_layer = tuple((lid, tuple(zip(sids[cuts[li]:cuts[li + 1]], ns[cuts[li]:cuts[li + 1]], strict=True)))
                      for li, lid in enumerate(session._skv_layers))
    return StepRetrieval(step, tuple(zip(uniq.tolist(), counts.tolist(), strict=True)), n_sel, per_layer, n_head_kv,
                         tuple(zip(uniq.tolist(), rr.tolist(), strict=True)))


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
