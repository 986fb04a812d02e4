"""Which sentences decode steps attended: one step's selection read from the native cache (merged over SKV
layers and KV heads, and per layer), and the top sentences of an answer by weight."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from engine.params import Policy
from engine.session.conversation import turn_entry

if TYPE_CHECKING:
    from engine.session.core import Session


@dataclass(frozen=True, slots=True)
class StepRetrieval:
    """Sentences attended at one decode step, merged over SKV layers and heads: (native id, count)."""

    step: int
    counts: tuple[tuple[int, int], ...]
    n_selections: int  # layers x heads
    n_head_kv: int = 1
    # (native id, sum over the selections that chose it of 1 / (1 + its rank there)): how high it was chosen
    ranks: tuple[tuple[int, float], ...] = ()
    # per SKV layer, kept as read (layer ids; per (layer, entry) pair: layer index, entry id, heads) for `layers`
    layer_ids: tuple[int, ...] = ()
    _per_layer: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(
        default=None, compare=False, repr=False
    )

    @property
    def layers(self) -> tuple[tuple[int, tuple[tuple[int, int], ...]], ...]:
        """Per SKV layer (model layer id): (native id, how many of its KV heads chose it); built when asked (the
        app's per-layer view needs it, a plain answer does not)."""
        if self._per_layer is None:
            return tuple((lid, ()) for lid in self.layer_ids)
        layer_of, sid_of, lcounts = self._per_layer
        cuts = np.searchsorted(layer_of, np.arange(len(self.layer_ids) + 1)).tolist()
        sids, ns = sid_of.tolist(), lcounts.tolist()
        return tuple(
            (lid, tuple(zip(sids[cuts[li] : cuts[li + 1]], ns[cuts[li] : cuts[li + 1]], strict=True)))
            for li, lid in enumerate(self.layer_ids)
        )


def read_step(session: Session, step: int) -> StepRetrieval | None:
    """The sentences the last decode step attended, merged over SKV layers and KV heads: one native call for every
    selection, counted with numpy (the per-token cost stays small next to the decode step)."""
    if session.skv is None or session.skv.get_params().policy == Policy.FULL:
        return None
    ids, offs = session.skv.selections()
    n_sel = len(offs) - 1
    layer_ids = tuple(session.skv_layers)
    n_head_kv = n_sel // max(len(layer_ids), 1)
    if len(ids) == 0:
        return StepRetrieval(step, (), n_sel, n_head_kv, (), layer_ids)
    seg = np.repeat(np.arange(n_sel), np.diff(offs))  # which (layer, head) each id came from
    rank = np.arange(len(ids)) - offs[seg]  # its place in that selection (descending score)
    uniq, inv, counts = np.unique(ids, return_inverse=True, return_counts=True)
    rr = np.bincount(inv, weights=1.0 / (1.0 + rank), minlength=len(uniq))
    width = int(uniq[-1]) + 1
    lkey, lcounts = np.unique((seg // n_head_kv) * width + ids, return_counts=True)
    layer_of, sid_of = np.divmod(lkey, width)
    u = uniq.tolist()
    return StepRetrieval(
        step,
        tuple(zip(u, counts.tolist(), strict=True)),
        n_sel,
        n_head_kv,
        tuple(zip(u, rr.tolist(), strict=True)),
        layer_ids,
        (layer_of, sid_of, lcounts),
    )


def top_sentences(
    session: Session, steps: list[StepRetrieval], top: int = 10, skip_turn: int = 0
) -> list[dict]:
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
        out.append(
            {
                "doc": doc.name,
                "location": doc.location(sp.char_start),
                "text": sp.text.strip(),
                "weight": n / total,
                "sentence": sid,
            }
        )
        if len(out) >= top:
            break
    return out
