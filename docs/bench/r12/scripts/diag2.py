import sys, numpy as np, dataclasses
from pathlib import Path
from engine.bench.passkey import PasskeyConfig, PasskeyRunner, thing
from engine.native import Policy, SkvParams, Remap, Layout
from engine.models import default_model_path
L = int(sys.argv[1]) if len(sys.argv) > 1 else 49152
cfg = PasskeyConfig(model=str(default_model_path()), lengths=(L,), depths=(0.1,0.3,0.5,0.7,0.9), needles=5,
                    policies=("sentence",), prefill_cache=Path("/tmp/pk/cache"), max_tokens=8)
r = PasskeyRunner(cfg)
rng = np.random.default_rng(cfg.seed)
keys = [int(rng.integers(10000, 100000)) for _ in cfg.depths]
hs = r.make_multi(L, cfg.depths, keys)
ids, _, _ = r.prefill_text(hs.text, [n.chars for n in hs.needles])
s = r.session
p0 = cfg.candidates()[0][1]
variants = eval(sys.argv[2]) if len(sys.argv) > 2 else [{}]
for var in variants:
    p = dataclasses.replace(p0, **var)
    ok = 0
    for nb, needle in enumerate(hs.needles):
        s.set_params(p); s.restore(r.snap)
        rec = []
        def samp(lg):
            lg = np.array(lg, dtype=np.float64)
            if True:
                lp = lg - lg.max(); lp = lp - np.log(np.exp(lp).sum())
                top = np.argsort(-lp)[:3]
                rec.append([(s.llm.detokenize([int(t)]).decode(errors='replace'), round(float(lp[t]),2)) for t in top])
            return int(np.argmax(lg))
        res = s.ask("", prompt_tokens=r.suffix_for(needle.box), max_tokens=7, sampler=samp)
        got = res.answer.strip()[:5]
        ok += got == str(needle.key)
        print(var, thing(needle.box), needle.key, repr(res.answer[:10]), rec[1] if len(rec)>1 else None, flush=True)
    print(var, "correct", ok, flush=True)
