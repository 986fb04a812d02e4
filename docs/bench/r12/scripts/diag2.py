import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np
from haystack import open_haystack

from engine.bench.passkey import thing
from engine.native import Layout, Remap  # noqa: F401 (the variants argument may name them)

L = int(sys.argv[1]) if len(sys.argv) > 1 else 49152
r, hs, ids, keys = open_haystack(L)
cfg = r.cfg
s = r.session
p0 = cfg.candidates()[0][1]
# a Python list of SkvParams field overrides, e.g. "[{'budget': 2048}, {'remap': Remap.ON}]"
variants = eval(sys.argv[2]) if len(sys.argv) > 2 else [{}]
for var in variants:
    p = dataclasses.replace(p0, **var)
    ok = 0
    for _nb, needle in enumerate(hs.needles):
        s.set_params(p)
        s.restore(r.snap)
        rec = []

        def samp(lg, rec=rec):  # the log-probabilities of the top 3 tokens at every step
            lg = np.array(lg, dtype=np.float64)
            if True:
                lp = lg - lg.max()
                lp = lp - np.log(np.exp(lp).sum())
                top = np.argsort(-lp)[:3]
                rec.append(
                    [
                        (s.llm.detokenize([int(t)]).decode(errors="replace"), round(float(lp[t]), 2))
                        for t in top
                    ]
                )
            return int(np.argmax(lg))

        res = s.ask("", prompt_tokens=r.suffix_for(needle.box), max_tokens=7, sampler=samp)
        got = res.answer.strip()[:5]
        ok += got == str(needle.key)
        print(
            var,
            thing(needle.box),
            needle.key,
            repr(res.answer[:10]),
            rec[1] if len(rec) > 1 else None,
            flush=True,
        )
    print(var, "correct", ok, flush=True)
