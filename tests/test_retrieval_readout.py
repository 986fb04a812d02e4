"""The per-token selection readout: one native call for every (layer, head) selection (llama_skv_get_selections),
aggregated with numpy, gives exactly what the per-selection calls give."""

from __future__ import annotations

from skv_harness import book_text

from engine.documents import Document
from engine.params import SkvParams
from engine.session import Session, SessionConfig
from engine.session.retrieval import read_step


def test_the_bulk_readout_equals_the_per_selection_calls(tiny_model_path):
    s = Session(
        SessionConfig(
            str(tiny_model_path), n_ctx=2048, n_threads=1, skv=SkvParams(budget=256, sink=16, ring=32)
        )
    )
    try:
        s.load_documents([Document.from_text("b.txt", book_text(n_chars=5000))], reserve=200)
        for step in range(3):
            s.ask("Who is there?", max_tokens=3 + step, ignore_eos=True, keep_turns=len(s.turns))
            st = s.skv.stats()
            per = [
                [p.entry for p in s.skv.selection(li, h)]
                for li in range(st.n_layers)
                for h in range(st.n_head_kv)
            ]
            ids, offs = s.skv.selections()
            assert [list(ids[offs[k] : offs[k + 1]]) for k in range(len(per))] == per
            counts: dict[int, int] = {}
            ranks: dict[int, float] = {}
            layers = []
            for li, lid in enumerate(s.skv.layers()):
                mine: dict[int, int] = {}
                for h in range(st.n_head_kv):
                    for rank, sid in enumerate(per[li * st.n_head_kv + h]):
                        mine[sid] = mine.get(sid, 0) + 1
                        counts[sid] = counts.get(sid, 0) + 1
                        ranks[sid] = ranks.get(sid, 0.0) + 1.0 / (1 + rank)
                layers.append((lid, tuple(sorted(mine.items()))))
            got = read_step(s, step)
            assert got.counts == tuple(sorted(counts.items())) and got.layers == tuple(layers)
            assert got.n_selections == st.n_layers * st.n_head_kv and got.n_head_kv == st.n_head_kv
            assert [sid for sid, _ in got.ranks] == sorted(ranks)
            assert all(abs(r - ranks[sid]) < 1e-9 for sid, r in got.ranks)
            assert sum(n for _, n in got.counts) == len(ids) > 0
    finally:
        s.close()
