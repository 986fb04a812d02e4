import sys, numpy as np
from pathlib import Path
from engine.bench.passkey import PasskeyConfig, PasskeyRunner, thing
from engine.bench import passkey as pk
from engine.native import Policy, SkvParams
from engine.models import default_model_path
cfg = PasskeyConfig(model=str(default_model_path()), lengths=(49152,), depths=(0.1,0.3,0.5,0.7,0.9), needles=5,
                    policies=("sentence",), prefill_cache=Path("/tmp/pk/cache"), max_tokens=8)
r = PasskeyRunner(cfg)
rng = np.random.default_rng(cfg.seed)
keys = [int(rng.integers(10000, 100000)) for _ in cfg.depths]
hs = r.make_multi(49152, cfg.depths, keys)
ids, _, _ = r.prefill_text(hs.text, [n.chars for n in hs.needles])
s = r.session
for i, sid in enumerate(ids):
    print(i, keys[i], [(x, s.spans[x].text[:60]) for x in sid])
p = cfg.candidates()[0][1]
for nb, needle in enumerate(hs.needles):
    s.set_params(p); s.restore(r.snap)
    res = s.ask("", prompt_tokens=r.suffix_for(needle.box), max_tokens=8)
    st = res.first_step
    c = dict(st.counts)
    print(thing(needle.box), repr(res.answer), "nsel", st.n_selections,
          [[c.get(x, 0) for x in sid] for sid in ids])
