"""Device-side SentenceKV bytes of the default model at a context size, with a book's real sentence boundaries.

    .venv/bin/python native/tools/device_bytes.py [--n-ctx 32768] [--book walden.txt] [--budget 1024]

The cache is filled with llama_skv_debug_fill (no prefill: the device bytes depend on how many sentences there are
and on the staging size, not on the K/V values), the book's sentence ends (tokenized as a prefill would) are
declared, two tokens are decoded, and the buffers' sizes are read back and compared with the full K/V of every
layer at the same KV type (F16). The in-graph score readback (n_head x rows per layer, F32) is added as computed.
"""

from __future__ import annotations

import argparse
import json


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-ctx", type=int, default=32768)
    p.add_argument("--book", default="walden.txt")
    p.add_argument("--budget", type=int, default=1024)
    p.add_argument("--model", default="")
    args = p.parse_args()

    from engine import native
    from engine.bench.harness import load_book_text
    from engine.models import resolve_model
    from engine.params import SkvParams
    from engine.sentences import tokenize_sentences
    from engine.session import Session, SessionConfig

    s = Session(
        SessionConfig(
            str(resolve_model(args.model)), n_ctx=args.n_ctx, n_threads=2, skv=SkvParams(budget=args.budget)
        )
    )
    try:
        n = args.n_ctx - 512
        text = load_book_text(args.book)
        toks, sents = tokenize_sentences(text[: n * 8], s.tokenize, max_tokens=128)
        ends = [x.tok_end for x in sents if x.tok_end <= n]
        native.debug_fill(s.llm.ctx, n, 1)
        s.skv.add_boundaries(ends)
        s.llm.n_tokens = n
        s.llm.input_ids[:n] = toks[:n]
        s.llm.eval([toks[n]])
        s.llm.eval([toks[n + 1]])
        st = s.skv.stats()
        full = s.full_kv_bytes()
        n_head = int(s._llama_cpp.llama_model_n_head(s.llm.model))
        readback = st.n_layers * n_head * st.sent_cap * 4
        out = {
            "n_ctx": args.n_ctx,
            "book": args.book,
            "n_sentences": st.n_sentences,
            "vector_rows": st.sent_cap,
            "device_vec_bytes": st.device_vec_bytes,
            "device_stage_bytes": st.device_stage_bytes,
            "score_readback_bytes": readback,
            "full_kv_bytes": full,
            "vec_plus_stage_over_full": round((st.device_vec_bytes + st.device_stage_bytes) / full, 5),
            "all_over_full": round((st.device_vec_bytes + st.device_stage_bytes + readback) / full, 5),
        }
        print(json.dumps(out, indent=1))
    finally:
        s.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
