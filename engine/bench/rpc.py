"""`skv bench rpc`: a model split across llama.cpp RPC servers, stock `full` (K/V on the servers) against SentenceKV
(K/V in this host's RAM, selected rows staged to the servers), and both on one machine.

Protocol (loopback: the servers are started here, so their memory and bytes can be read from /proc):
- per context and mode, fresh servers (`skv rpc-server`, one thread each), one Session, a dense prefill of book text,
  then `steps` teacher-forced decode steps over the text that follows (median ms/token);
- memory held on each server: its resident set after the decode minus the one it had before the client came (the
  weights of its layers included: the same in both modes), and the K/V bytes the client put there by
  construction (stock: its layers' share of the dense cache; SentenceKV: the staging rows and semantic vectors);
- bytes per decode step: a second session of the same mode talks to the servers through byte-counting relays
  (engine/bench/rpc_meter.py) and decodes the same steps; both directions, divided by the steps. "at 1 Gbit/s" is
  those bytes / 125 MB/s, the wire time one step would need on such a link (latency not included). Timings come
  from the direct session only.
The servers share this machine's cores with the client, so ms/token is a loopback figure, not a network one.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import params as defaults
from engine.bench import report
from engine.bench.harness import OptionError, ctx_label, int_list, load_book_text, median
from engine.bench.rpc_meter import Meter
from engine.params import DEFAULT_PARAMS, Policy, SkvParams

MODES = ("local full", "local sentence", "rpc full", "rpc sentence")
LINK_BYTES_PER_S = 125e6  # 1 Gbit/s


@dataclass(slots=True)
class RpcBenchConfig:
    model: str
    contexts: tuple[int, ...] = (4096, 16384)
    servers: int = 2
    steps: int = 16
    threads: int = defaults.N_THREADS
    budget: int = DEFAULT_PARAMS.budget
    book: str = "walden.txt"
    out: Path | None = None
    alloc_only: bool = (
        False  # open the contexts, read what the servers hold, no prefill or decode (long contexts)
    )


class LocalServer:
    """One `skv rpc-server` on 127.0.0.1 (a free port), for the benchmark and the tests."""

    def __init__(self, threads: int = 1) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine.cli",
                "rpc-server",
                "--port",
                str(self.port),
                "--threads",
                str(threads),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the RPC server on port {self.port} did not start") from None
                time.sleep(0.2)
        time.sleep(0.3)  # the server is back in accept() after that first connection
        self.rss0 = self.rss()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def run_mode(
    cfg: RpcBenchConfig, n_tokens: int, mode: str, text: str, log, metered: bool = False
) -> dict[str, Any]:
    from engine.bench.speed import _continuation, _prefix_text
    from engine.documents import Document
    from engine.session import Session, SessionConfig

    remote = mode.startswith("rpc")
    skv = SkvParams(Policy.SENTENCE, cfg.budget) if mode.endswith("sentence") else None
    n_ctx = -(-(n_tokens + cfg.steps + 8) // 256) * 256
    servers = [LocalServer() for _ in range(cfg.servers)] if remote else []
    meters = [Meter("127.0.0.1", x.port) for x in servers] if metered else []
    endpoints = tuple(m.endpoint for m in meters) if metered else tuple(x.endpoint for x in servers)

    def wire() -> int:
        return sum(sum(m.totals()) for m in meters)

    try:
        s = Session(SessionConfig(cfg.model, n_ctx=n_ctx, n_threads=cfg.threads, skv=skv, rpc=endpoints))
        try:
            if cfg.alloc_only:
                return _alloc_row(cfg, n_tokens, mode, s, servers)
            doc = Document.from_text(cfg.book, _prefix_text(text, n_tokens))
            t0 = time.perf_counter()
            s.load_documents([doc], reserve=n_ctx - n_tokens)
            prefill_s = time.perf_counter() - t0
            n_doc = s.n_doc_tokens
            cont = _continuation(s, doc.text, cfg.steps)
            s.rewind(n_doc)
            b0 = wire()
            ms = []
            for tok in cont:
                t = time.perf_counter()
                s.llm.eval([tok])
                ms.append((time.perf_counter() - t) * 1e3)
            per_step = (wire() - b0) / len(cont)
            mem = s.memory()
            held = [x.rss() - x.rss0 for x in servers]
            if not remote:
                kv_remote = 0
            elif skv is None:  # stock: every layer's K/V on the servers, split between them
                kv_remote = mem["full_kv_bytes"] // max(1, cfg.servers)
            else:  # SentenceKV: the staging rows and vectors of the layers each server holds
                kv_remote = mem["device_skv_bytes"] // max(1, cfg.servers)
            out = {
                "context": n_tokens,
                "mode": mode,
                "metered": metered,
                "prefill_tokens": n_doc,
                "prefill_s": prefill_s,
                "ms_per_token": median(ms),
                "bytes_per_step": per_step,
                "link_ms_per_step": per_step / LINK_BYTES_PER_S * 1e3,
                "server_rss_bytes": held,
                "kv_bytes_per_server": kv_remote,
                "full_kv_bytes": mem["full_kv_bytes"],
            }
            log(
                f"[{ctx_label(n_tokens)} {mode}{' (metered)' if metered else ''}] {out['ms_per_token']:.1f} "
                f"ms/tok, {per_step / 1e6:.3f} MB/step, server RSS {[round(h / 2**20) for h in held]} MiB"
            )
            return out
        finally:
            s.close()
    finally:
        for m in meters:
            m.close()
        for x in servers:
            x.stop()


def _alloc_row(cfg: RpcBenchConfig, n_tokens: int, mode: str, s, servers: list) -> dict[str, Any]:
    """What the servers hold right after the context is created (llama.cpp clears the K/V buffers it allocates,
    so stock's whole cache is resident then)."""
    mem = s.memory()
    remote = bool(servers)
    kv = 0
    if remote:
        kv = (mem["full_kv_bytes"] if mode.endswith("full") else mem["device_skv_bytes"]) // max(
            1, cfg.servers
        )
    return {
        "context": n_tokens,
        "mode": mode,
        "metered": False,
        "prefill_tokens": 0,
        "prefill_s": 0.0,
        "ms_per_token": float("nan"),
        "bytes_per_step": float("nan"),
        "link_ms_per_step": float("nan"),
        "server_rss_bytes": [x.rss() - x.rss0 for x in servers],
        "kv_bytes_per_server": kv,
        "full_kv_bytes": mem["full_kv_bytes"],
    }


def run(cfg: RpcBenchConfig, log=print) -> dict[str, Any]:
    text = load_book_text(cfg.book)
    rows = []
    for n in cfg.contexts:
        for mode in MODES:
            if cfg.alloc_only and not mode.startswith("rpc"):
                continue
            row = run_mode(cfg, n, mode, text, log)
            if mode.startswith("rpc") and not cfg.alloc_only:
                metered = run_mode(cfg, n, mode, text, log, metered=True)
                row["bytes_per_step"] = metered["bytes_per_step"]
                row["link_ms_per_step"] = metered["link_ms_per_step"]
                row["metered_ms_per_token"] = metered["ms_per_token"]
            rows.append(row)
    data = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in _asdict(cfg).items()},
        "results": rows,
    }
    if cfg.out is not None:
        cfg.out.mkdir(parents=True, exist_ok=True)
        h, table = summarize(rows)
        report.write_json(cfg.out / "rpc.json", data)
        (cfg.out / "rpc.md").write_text(report.markdown_table(h, table) + "\n", encoding="utf-8")
    return data


def _asdict(cfg: RpcBenchConfig) -> dict[str, Any]:
    return {k: getattr(cfg, k) for k in cfg.__slots__}


def summarize(rows: list[dict]) -> tuple[list[str], list[list[Any]]]:
    h = [
        "ctx",
        "mode",
        "ms/tok",
        "MB/step over RPC",
        "at 1 Gbit/s ms/step",
        "K/V bytes put on each server (MiB)",
        "server RSS growth (MiB each)",
    ]
    table = [
        [
            ctx_label(r["context"]),
            r["mode"],
            round(r["ms_per_token"], 1),
            round(r["bytes_per_step"] / 1e6, 3) if r["mode"].startswith("rpc") else "-",
            round(r["link_ms_per_step"], 2) if r["mode"].startswith("rpc") else "-",
            round(r["kv_bytes_per_server"] / 2**20, 1) if r["mode"].startswith("rpc") else "-",
            "/".join(str(round(x / 2**20)) for x in r["server_rss_bytes"]) or "-",
        ]
        for r in rows
    ]
    return h, table


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="GGUF model file (default: the built-in Qwen2.5-Coder-0.5B-Instruct)")
    p.add_argument("--contexts", default="4k,16k", help="context sizes (default %(default)s)")
    p.add_argument("--servers", type=int, default=2, help="loopback RPC servers (default %(default)s)")
    p.add_argument("--steps", type=int, default=16, help="decode steps (default %(default)s)")
    p.add_argument(
        "--threads", type=int, default=defaults.N_THREADS, help="client threads (default %(default)s)"
    )
    p.add_argument("--budget", type=int, default=DEFAULT_PARAMS.budget)
    p.add_argument("--book", default="walden.txt")
    p.add_argument("--out", default="bench-results/rpc", help="output folder (default %(default)s)")
    p.add_argument(
        "--alloc-only",
        action="store_true",
        help="only open the contexts and read what each server holds (no prefill, no decode: long contexts)",
    )


def main_rpc(args: argparse.Namespace) -> int:
    from engine import rpc
    from engine.models import resolve_model

    if not rpc.available():
        raise OptionError("this wheel has no RPC backend: run make setup")
    try:
        cfg = RpcBenchConfig(
            model=str(resolve_model(args.model or "")),
            contexts=int_list(args.contexts),
            servers=args.servers,
            steps=args.steps,
            threads=args.threads,
            budget=args.budget,
            book=args.book,
            out=Path(args.out),
            alloc_only=args.alloc_only,
        )
    except ValueError as e:
        raise OptionError(str(e)) from None
    data = run(cfg, log=lambda s: print(s, file=sys.stderr, flush=True))
    h, table = summarize(data["results"])
    print(report.text_table(h, table))
    print(f"wrote {cfg.out}/rpc.json, rpc.md")
    return 0
