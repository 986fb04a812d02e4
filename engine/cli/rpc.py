"""`skv rpc-server`: lend this host's CPU or GPU to a model split across machines (llama.cpp's RPC server, from the
wheel's own libggml-rpc). A client on another host runs `skv ask/chat/serve --rpc THIS_HOST:PORT`."""

from __future__ import annotations

import argparse
import os
import sys

from engine import rpc


def cmd_rpc_server(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise rpc.RpcError(f"--port must be 1 to 65535, got {args.port}", code=2)
    if args.threads < 1:
        raise rpc.RpcError(f"--threads must be at least 1, got {args.threads}", code=2)
    if not rpc.is_loopback(args.host):
        print(f"skv rpc-server: {rpc.REMOTE_WARNING} (listening on {args.host})", file=sys.stderr, flush=True)
    cache = None
    if args.cache:
        from engine.paths import cache_dir

        cache = str(cache_dir() / "rpc")
        os.makedirs(cache, exist_ok=True)
    rpc.serve(args.host, args.port, args.threads, cache)
    return 0


def add_rpc_server_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rpc-server",
        help="lend this host's CPU/GPU to a model split across machines (llama.cpp's RPC server)",
        description="Runs llama.cpp's RPC server until stopped (Ctrl+C). It binds 127.0.0.1 unless --host is "
        "given; the protocol has no authentication or encryption: only on a network you trust.",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default %(default)s: this machine)"
    )
    p.add_argument("--port", type=int, default=rpc.DEFAULT_PORT, help="port (default %(default)s)")
    p.add_argument(
        "--threads",
        type=int,
        default=max(1, (os.cpu_count() or 2) // 2),
        help="CPU threads (default: half the cores, %(default)s)",
    )
    p.add_argument("--cache", action="store_true", help="keep received tensors in a local file cache")
