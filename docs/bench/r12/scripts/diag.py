import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from haystack import open_haystack

from engine.bench.passkey import thing

r, hs, ids, keys = open_haystack(49152)
cfg = r.cfg
s = r.session
for i, sid in enumerate(ids):
    print(i, keys[i], [(x, s.spans[x].text[:60]) for x in sid])
p = cfg.candidates()[0][1]
for _nb, needle in enumerate(hs.needles):
    s.set_params(p)
    s.restore(r.snap)
    res = s.ask("", prompt_tokens=r.suffix_for(needle.box), max_tokens=8)
    st = res.first_step
    c = dict(st.counts)
    print(
        thing(needle.box),
        repr(res.answer),
        "nsel",
        st.n_selections,
        [[c.get(x, 0) for x in sid] for sid in ids],
    )
