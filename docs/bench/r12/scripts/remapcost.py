import sys, numpy as np, dataclasses, statistics as stt
from pathlib import Path
from engine.bench.passkey import PasskeyConfig, PasskeyRunner, thing
from engine.native import Remap
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
p0 = cfg.candidates()[0][1]
cands = {"remap": p0, "off@512": dataclasses.replace(p0, remap=Remap.OFF, score_distance=512)}
res = {k: [] for k in cands}
N = int(sys.argv[1]) if len(sys.argv) > 1 else 48
for rep in range(3):
    for k, p in cands.items():
        s.set_params(p); s.restore(r.snap)
        a = s.ask("", prompt_tokens=r.suffix_for(1), max_tokens=N, ignore_eos=True) if 'ignore_eos' in s.ask.__code__.co_varnames else s.ask("", prompt_tokens=r.suffix_for(1), max_tokens=N)
        ms = 1000 * a.decode_s / max(1, len(a.tokens))
        st = s.skv.stats()
        res[k].append(ms)
        print(rep, k, f"{ms:.1f} ms/token over {len(a.tokens)}; prepare {st.t_prepare_us_last/1000:.1f} ms; remapped {st.positions_remapped}", flush=True)
for k, v in res.items():
    print(k, "median", f"{stt.median(v):.1f}")
print("remap/off", f"{stt.median(res['remap'])/stt.median(res['off@512']):.3f}")
