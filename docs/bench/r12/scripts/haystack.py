"""The alike five-needle haystack of `skv eval passkey --needles` at one length, restored from (or prefilled into)
--prefill-cache /tmp/pk/cache: what the diagnostic scripts here start from. Run them from the checkout root with
`.venv/bin/python docs/bench/r12/scripts/<script>.py`."""

from pathlib import Path

import numpy as np

from engine.bench.passkey import PasskeyConfig, PasskeyRunner
from engine.models import default_model_path

DEPTHS = (0.1, 0.3, 0.5, 0.7, 0.9)


def open_haystack(length: int = 49152, cache: str = "/tmp/pk/cache"):
    """(runner, haystack, needle sentence ids, keys) with the prefill restored in runner.snap."""
    cfg = PasskeyConfig(
        model=str(default_model_path()),
        lengths=(length,),
        depths=DEPTHS,
        needles=len(DEPTHS),
        policies=("sentence",),
        prefill_cache=Path(cache),
        max_tokens=8,
    )
    r = PasskeyRunner(cfg)
    rng = np.random.default_rng(cfg.seed)
    keys = [int(rng.integers(10000, 100000)) for _ in cfg.depths]
    hs = r.make_multi(length, cfg.depths, keys)
    ids, _, _ = r.prefill_text(hs.text, [n.chars for n in hs.needles])
    return r, hs, ids, keys
