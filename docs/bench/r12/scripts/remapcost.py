import dataclasses
import os
import statistics as stt
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from haystack import open_haystack

from engine.native import Remap

L = 49152
r, hs, ids, keys = open_haystack(L)
cfg = r.cfg
s = r.session
p0 = cfg.candidates()[0][1]
cands = {"remap": p0, "off@512": dataclasses.replace(p0, remap=Remap.OFF, score_distance=512)}
res = {k: [] for k in cands}
N = int(sys.argv[1]) if len(sys.argv) > 1 else 48
for rep in range(3):
    for k, p in cands.items():
        s.set_params(p)
        s.restore(r.snap)
        a = (
            s.ask("", prompt_tokens=r.suffix_for(1), max_tokens=N, ignore_eos=True)
            if "ignore_eos" in s.ask.__code__.co_varnames
            else s.ask("", prompt_tokens=r.suffix_for(1), max_tokens=N)
        )
        ms = 1000 * a.decode_s / max(1, len(a.tokens))
        st = s.skv.stats()
        res[k].append(ms)
        print(
            rep,
            k,
            f"{ms:.1f} ms/token over {len(a.tokens)}; prepare {st.t_prepare_us_last / 1000:.1f} ms; remapped {st.positions_remapped}",
            flush=True,
        )
for k, v in res.items():
    print(k, "median", f"{stt.median(v):.1f}")
print("remap/off", f"{stt.median(res['remap']) / stt.median(res['off@512']):.3f}")
