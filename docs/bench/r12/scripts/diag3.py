import sys, numpy as np, dataclasses, collections
from pathlib import Path
from engine.bench.passkey import PasskeyConfig, PasskeyRunner, thing
from engine.models import default_model_path
L = 49152
cfg = PasskeyConfig(model=str(default_model_path()), lengths=(L,), depths=(0.1,0.3,0.5,0.7,0.9), needles=5,
                    policies=("sentence",), prefill_cache=Path("/tmp/pk/cache"), max_tokens=8)
r = PasskeyRunner(cfg)
rng = np.random.default_rng(cfg.seed)
keys = [int(rng.integers(10000, 100000)) for _ in cfg.depths]
hs = r.make_multi(L, cfg.depths, keys)
ids, _, _ = r.prefill_text(hs.text, [n.chars for n in hs.needles])
s = r.session
p = cfg.candidates()[0][1]
for nb, needle in enumerate(hs.needles):
    s.set_params(p); s.restore(r.snap)
    res = s.ask("", prompt_tokens=r.suffix_for(needle.box), max_tokens=2)
    st = res.first_step
    c = collections.Counter()
    for sid, n in st.counts:
        t = s.spans[sid].text.strip()
        c[t if "secret" not in t else "NEEDLE"] += n
    print(thing(needle.box), repr(res.answer), c.most_common(8), flush=True)
