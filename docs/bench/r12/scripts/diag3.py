import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from haystack import open_haystack

from engine.bench.passkey import thing

L = 49152
r, hs, ids, keys = open_haystack(L)
cfg = r.cfg
s = r.session
p = cfg.candidates()[0][1]
for _nb, needle in enumerate(hs.needles):
    s.set_params(p)
    s.restore(r.snap)
    res = s.ask("", prompt_tokens=r.suffix_for(needle.box), max_tokens=2)
    st = res.first_step
    c = collections.Counter()
    for sid, n in st.counts:
        t = s.spans[sid].text.strip()
        c[t if "secret" not in t else "NEEDLE"] += n
    print(thing(needle.box), repr(res.answer), c.most_common(8), flush=True)
